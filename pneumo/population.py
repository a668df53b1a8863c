"""Is this chest X-ray from the population the model knows?

The model learnt from children aged 1-5 at one hospital in Guangzhou. On
adults it misses most pneumonia (measured on the NIH films: see the model
card), so an adult film gets no verdict. A logistic regression on the
model's own last-layer maps, averaged over each cell of a 4 x 4 grid (so
that it sees proportions: where lungs, heart and shoulders lie, not only
what textures occur), tells the two apart; training/population.py
fits it (children of train/ and val/ against adult films, with the same
augmentations applied to both so that it cannot lean on how one hospital's
files look) and saves it as population.npz in the run folder.

Serving needs only numpy: P(outside) = sigmoid(coef . standardise(log1p(regions)) + intercept).
"""

from dataclasses import dataclass

import numpy as np

from .fitted_file import FittedFile
from .run_folder import POPULATION


@dataclass
class PopulationCheck(FittedFile):
    FILE = POPULATION  # in the run folder; absent: no population gate (pneumo info says so)
    mean: np.ndarray  # (features,) of log1p(region features) in the fit (pneumo/predict.py)
    scale: np.ndarray  # (features,) their standard deviation
    coef: np.ndarray  # (features,) logistic-regression weights
    intercept: float
    threshold: float  # P(outside) at or above it: outside the population
    # What the pneumonia model did on the adult films, measured when fitted: the reason the check exists.
    adult_sensitivity: float = float("nan")
    adult_auc: float = float("nan")

    def outside_probability(self, regions) -> np.ndarray:
        """(N, features) region features -> (N,) P(outside the population)."""
        z = (np.log1p(np.maximum(np.asarray(regions, np.float64), 0.0)) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))
