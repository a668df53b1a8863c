"""Fit the calibration that makes validation probabilities honest."""

import numpy as np
from scipy.optimize import minimize

from pneumo.answers.calibration import apply_calibration


def fit_calibration(probabilities, labels):
    """(T, class_bias) minimising the negative log-likelihood of `labels`.

    The first class's bias stays 0: softmax ignores a shift of all three.
    """

    def nll(params):
        temperature, bias = np.exp(params[0]), (0.0, params[1], params[2])
        calibrated = apply_calibration(probabilities, temperature, bias)
        return -np.mean(np.log(np.clip(calibrated[np.arange(len(labels)), labels], 1e-12, 1.0)))

    bounds = [(np.log(0.05), np.log(20.0)), (-10, 10), (-10, 10)]
    result = minimize(nll, x0=np.zeros(3), bounds=bounds, method="L-BFGS-B")
    return float(np.exp(result.x[0])), [0.0, float(result.x[1]), float(result.x[2])]
