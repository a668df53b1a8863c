"""The heatmap from the maps and the head's kernel (pneumo/model/heatmap.py) is Grad-CAM:
equal to TensorFlow's GradientTape Grad-CAM on the float model, close on int8."""

import numpy as np
import pytest

from pneumo.answers.calibration import calibrate
from pneumo.model.heatmap import heatmaps, log_odds_gradient
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.model.preprocess import preprocess, to_model_input
from pneumo.model.run_folder import INT8_ONNX
from tests.conftest import require, synthetic_xray

# Heatmaps are scaled to peak at 1: the largest difference, relative to that peak.
RELATIVE_ERROR = 1e-4
INT8_CORRELATION = 0.95
IMAGES = 32  # val/ X-rays, half of each class


@pytest.fixture(scope="module")
def reference():
    """The bundled model in Keras, and its Grad-CAM by GradientTape."""
    from tests.gradcam_reference import GradCam

    loaded = load_model(BUNDLED_DIR, runtime="keras")
    return loaded, GradCam(loaded.runtime.model, loaded.config["gradcam_layer"])


@pytest.fixture(scope="module")
def xrays(shared_data):
    from pneumo.inputs.decode import decode

    files = [sorted((shared_data / "val" / label).glob("*.jpeg"))[:IMAGES // 2] for label in ("NORMAL", "PNEUMONIA")]
    size = 128
    return np.concatenate([preprocess(decode(path).image, size) for group in files for path in group])


def correlation(a, b):
    """Pearson's r; two flat maps (nothing raised the odds in either) agree fully."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    spread = np.sqrt((a * a).sum() * (b * b).sum())
    if spread == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float((a * b).sum() / spread)


def test_log_odds_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (5, 3))

    def log_odds(z):
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return np.log(p[:, 1] + p[:, 2] + 1e-7) - np.log(p[:, 0] + 1e-7)

    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    step = 1e-6
    numeric = np.stack([(log_odds(logits + step * np.eye(3)[k]) - log_odds(logits - step * np.eye(3)[k])) / (2 * step)
                        for k in range(3)], axis=1)
    np.testing.assert_allclose(log_odds_gradient(p), numeric, rtol=1e-5, atol=1e-7)


def test_all_zero_maps_give_a_zero_heatmap():
    out = heatmaps(np.zeros((2, 4, 4, 8)), np.full((2, 3), 1 / 3), np.ones((8, 3)))
    assert out.shape == (2, 4, 4) and not out.any()


def test_equal_to_gradient_tape_grad_cam_on_the_float_model(reference, xrays):
    loaded, gradcam = reference
    inputs = np.concatenate([xrays, preprocess(synthetic_xray("virus", 3, size=200), 128)])
    tape_probabilities, tape_maps = gradcam(inputs)
    raw, maps = loaded.runtime(inputs)
    ours = heatmaps(maps, raw, loaded.runtime.head_kernel)
    np.testing.assert_allclose(raw, tape_probabilities, atol=1e-6)
    assert np.abs(ours - tape_maps).max() <= RELATIVE_ERROR * np.abs(tape_maps).max()


def test_equal_on_the_onnx_float_model(reference, xrays):
    _, gradcam = reference
    onnx_float = load_model(BUNDLED_DIR, runtime="onnx-float")
    raw, maps = onnx_float.runtime(xrays)
    _, tape_maps = gradcam(xrays)
    ours = heatmaps(maps, raw, onnx_float.runtime.head_kernel)
    assert np.abs(ours - tape_maps).max() <= RELATIVE_ERROR * np.abs(tape_maps).max()


def test_close_on_the_int8_model(reference, xrays):
    """Correlated at least 0.95 on average, and on every X-ray called PNEUMONIA,
    whose heatmap is the evidence shown. A confidently normal X-ray has an
    almost empty map (nothing raised the odds of pneumonia), where a few
    noise-level cells that int8 adds or drops can decorrelate it: on all of
    val/ the mean is 0.987 and the lowest over pneumonia verdicts 0.997."""
    require((BUNDLED_DIR / INT8_ONNX).is_file(), f"the bundled model has no {INT8_ONNX}")
    _, gradcam = reference
    int8 = load_model(BUNDLED_DIR, runtime="onnx-int8")
    raw, maps = int8.runtime(xrays)
    tape_probabilities, tape_maps = gradcam(xrays)
    ours = heatmaps(maps, raw, int8.runtime.head_kernel)
    correlations = np.array([correlation(a, b) for a, b in zip(ours, tape_maps)])
    assert correlations.mean() >= INT8_CORRELATION, correlations
    sick = calibrate(tape_probabilities, int8.config)[:, 1:].sum(axis=1) >= int8.config["threshold"]
    assert sick.sum() >= IMAGES // 4
    assert correlations[sick].min() >= INT8_CORRELATION, correlations[sick]


def test_tiny_model_too(tiny_run):
    """Another architecture size (32 px, 2 x 2 maps) and an untrained-looking head."""
    from tests.gradcam_reference import GradCam

    loaded = load_model(tiny_run, runtime="keras")
    inputs = to_model_input(np.stack([np.asarray(synthetic_xray(k, s, size=32).convert("L"))
                                      for s, k in enumerate(["normal", "bacteria", "virus"] * 2)]))
    _, tape_maps = GradCam(loaded.runtime.model, loaded.config["gradcam_layer"])(inputs)
    raw, maps = loaded.runtime(inputs)
    ours = heatmaps(maps, raw, loaded.runtime.head_kernel)
    assert np.abs(ours - tape_maps).max() <= RELATIVE_ERROR * max(np.abs(tape_maps).max(), 1e-12)
