"""Whose chest X-ray is this: a young child's or an adult's? (the router)

The children's model learnt from children aged 1-5 at one hospital in
Guangzhou and misses much pneumonia on adults (the model card has the
figures), so an adult film gets the adult answer instead, or no verdict
where the run folder has none (pneumo/checks/scope.py). A logistic regression on the
model's own last-layer maps, averaged over each cell of a 4 x 4 grid (so
that it sees proportions: where lungs, heart and shoulders lie, not only
what textures occur), tells the two apart; training/checks/population.py
fits it (children of train/ and val/ against adult films, with the same
augmentations applied to both so that it cannot lean on how one hospital's
files look) and saves it as population.npz in the run folder.

Serving needs only numpy: P(adult) = sigmoid(coef . standardise(log1p(regions)) + intercept),
a linear read-out (pneumo/answers/readout.py).
"""

from dataclasses import dataclass

import numpy as np

from pneumo.answers.readout import LinearReadout
from pneumo.model.run_folder import POPULATION


@dataclass
class PopulationCheck(LinearReadout):
    """Reads the region features of the children's model's pass (pneumo/model/predict.py)."""
    FILE = POPULATION  # in the run folder; absent: no chest X-ray gets a verdict (pneumo/checks/scope.py)
    threshold: float  # P(adult) at or above it: an adult's film
    # What the pneumonia model did on the adult films, measured when fitted: the reason the check exists.
    adult_sensitivity: float = float("nan")
    adult_auc: float = float("nan")

    def adult_probability(self, regions) -> np.ndarray:
        """(N, features) region features -> (N,) P(an adult's film)."""
        return self.probability(regions)
