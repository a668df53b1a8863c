"""A linear read-out of pooled ReLU features, the form every fitted read-out here takes:

    score = coef . (log1p(features) - mean) / scale + intercept,   P = sigmoid(score)

ReLU features are skewed with long tails; log1p brings them closer to the
Gaussian a linear model assumes, and standardising lets one L2 strength fit
all channels. The population check (pneumo/checks/population.py: P(adult))
and the adult answer (pneumo/answers/adult.py: P(pneumonia), recalibrated)
are such read-outs; training/readout.py fits them.
"""

from dataclasses import dataclass

import numpy as np

from pneumo.answers.fitted_file import FittedFile


def log_features(features, dtype=np.float64) -> np.ndarray:
    """log1p of ReLU features (negatives, from rounding, count as 0)."""
    return np.log1p(np.maximum(np.asarray(features, dtype), 0.0))


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@dataclass
class LinearReadout(FittedFile):
    mean: np.ndarray  # (features,) of log_features in the fit
    scale: np.ndarray  # (features,) their standard deviation
    coef: np.ndarray  # (features,) logistic-regression weights
    intercept: float

    def score(self, features) -> np.ndarray:
        """(N, features) -> (N,) the regression's score (its log-odds)."""
        return (log_features(features) - self.mean) / self.scale @ self.coef + self.intercept

    def probability(self, features) -> np.ndarray:
        """(N, features) -> (N,) the regression's probability."""
        return sigmoid(self.score(features))
