"""Fit the model-feature half of the not-a-chest-X-ray check (pneumo/checks/ood.py).

The features are the heatmap layer's maps averaged over space, of training
X-rays and their variants (training/checks/scope.py scores them); the threshold is
set so that at most 1% of the selection split (val/) and of the training
images themselves are flagged. Saved as ood.npz in the run folder.
"""

import numpy as np

from pneumo.checks.ood import FeatureCheck

COMPONENTS = 64
# At most this share of X-rays may be flagged.
FLAGGED_XRAYS = 0.01


def fit_check(train_features, selection_features, components=COMPONENTS) -> FeatureCheck:
    """PCA of the training features, thresholded at the 99th percentile of
    the selection split's and the training images' own distances, whichever
    is higher (the training images have the longer tail)."""
    x = FeatureCheck.transform(train_features)
    mean = x.mean(axis=0)
    _, singular, rows = np.linalg.svd(x - mean, full_matrices=False)
    variances = singular ** 2 / max(len(x) - 1, 1)
    k = min(components, len(variances) - 1)
    check = FeatureCheck(mean, rows[:k], np.sqrt(variances[:k]) + 1e-6,
                         residual_variance=float(variances[k:].sum() / (x.shape[1] - k)) + 1e-9,
                         threshold=np.inf).as_saved()  # distances as serving computes them (float32 components)
    check.threshold = max(cut_above(check.distance(f), FLAGGED_XRAYS) for f in (selection_features, train_features))
    return check


def cut_above(distances, share) -> float:
    """A threshold that flags at most `share` of `distances`: midway between the highest distance left
    unflagged and the next one above it, so that no film sits on the cut and rounding cannot flip one."""
    kept = float(np.quantile(distances, 1 - share, method="higher"))
    above = distances[distances > kept]
    return (kept + float(above.min())) / 2 if len(above) else kept + 1.0
