"""Fit the temperature that makes validation probabilities honest."""

import numpy as np
from scipy.optimize import minimize_scalar

from pneumo.calibration import apply_temperature


def fit_temperature(probabilities, labels):
    """The T in [0.05, 20] that minimises the negative log-likelihood of `labels`."""

    def nll(log_t):
        calibrated = apply_temperature(probabilities, np.exp(log_t))
        return -np.mean(np.log(np.clip(calibrated[np.arange(len(labels)), labels], 1e-12, 1.0)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
