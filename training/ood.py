"""Fit the model-feature half of the not-a-chest-X-ray check (pneumo/ood.py).

The features are the Grad-CAM layer's maps averaged over space, of training
X-rays; the threshold is set so that at most 1% of the selection split
(val/) and of the training images themselves are flagged. Saved as ood.npz
in the run folder (about 65 KB).
"""

import keras
import numpy as np

from pneumo.ood import FILE, FeatureCheck
from pneumo.preprocess import to_model_input

from .data import load_pixels

# A sample of train/ is enough for a 32-component fit and keeps the extra
# forward pass to a few minutes on a CPU. Below MIN_FIT_IMAGES (a toy run)
# the covariance is noise: no ood.npz, and serving uses statistics only.
MAX_FIT_IMAGES = 2000
MIN_FIT_IMAGES = 320
COMPONENTS = 32
# At most this share of X-rays may be flagged.
FLAGGED_XRAYS = 0.01


def pooled_features(model, layer_name, pixels, chunk=256) -> np.ndarray:
    """uint8 greyscale pixels (N, H, W) -> (N, channels): the layer's maps
    averaged over space. In chunks: float inputs of 2000 images would take GBs."""
    maps = model.get_layer(layer_name).output
    features = keras.Model(model.input, keras.layers.GlobalAveragePooling2D()(maps))
    return np.concatenate([features.predict(to_model_input(pixels[start:start + chunk]), batch_size=32, verbose=0)
                           for start in range(0, len(pixels), chunk)])


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
                         residual_variance=float(variances[k:].sum() / (x.shape[1] - k)) + 1e-9, threshold=np.inf)
    # "higher": a real distance, so that strictly fewer than 1% lie above it.
    check.threshold = float(max(np.quantile(check.distance(f), 1 - FLAGGED_XRAYS, method="higher")
                                for f in (selection_features, train_features)))
    return check


def fit_and_save(model, splits, image_size, layer_name, out, log, seed=0):
    """Fit on (a sample of) train/, threshold on the selection split, write OUT/ood.npz."""
    if len(splits.train) < MIN_FIT_IMAGES:
        log(f"not-a-chest-X-ray check: only {len(splits.train)} training images, no ood.npz (statistics only)")
        (out / FILE).unlink(missing_ok=True)  # never keep one fitted for an earlier model
        return None
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(splits.train), min(MAX_FIT_IMAGES, len(splits.train)), replace=False))
    train = pooled_features(model, layer_name, load_pixels([splits.train[i] for i in chosen], image_size))
    selection = pooled_features(model, layer_name, load_pixels(splits.selection, image_size))
    check = fit_check(train, selection)
    check.save(out / FILE)
    flagged = np.mean(check.distance(selection) > check.threshold)
    log(f"not-a-chest-X-ray check: {check.components.shape[0]} components from {len(train)} training images, "
        f"threshold {check.threshold:.2f}; flags {flagged:.1%} of {splits.selection_name}")
    return check
