"""The model's three output classes, in output order."""

from pneumo.model.run_folder import CLASSES  # part of the run folder's contract

NORMAL, BACTERIAL, VIRAL = range(3)


def pneumonia_probability(probabilities):
    """P(pneumonia) = P(bacterial) + P(viral), for one row or a batch."""
    return probabilities[..., BACTERIAL] + probabilities[..., VIRAL]
