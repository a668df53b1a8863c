"""The model's raw outputs for a batch of model inputs, from one forward pass.

    model_outputs(loaded, inputs, with_heatmap) -> ModelOutputs

Everything after this (the scope checks, calibration, the verdict) is
pneumo/analysis.py's; everything before it (decoding, preprocessing) too.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class ModelOutputs:
    raw: np.ndarray  # (N, 3) uncalibrated probabilities, in CLASSES order
    pooled: np.ndarray | None  # (N, channels) the heatmap layer's maps averaged over space; None if not computed
    heatmaps: np.ndarray | None  # (N, h, w) in [0, 1], or None when not asked for


def model_outputs(loaded, inputs, with_heatmap=False) -> ModelOutputs:
    """Model inputs (N, H, W, 3) -> probabilities, pooled features and, if asked, heatmaps."""
    if with_heatmap:
        raw, heatmaps, pooled = loaded.gradcam(inputs)
        return ModelOutputs(np.asarray(raw), np.asarray(pooled), np.asarray(heatmaps))
    fast = getattr(loaded, "fast", None)  # the int8 model when there is one (pneumo/fast.py)
    if fast is None:
        pooled, raw = loaded.features_and_probabilities(inputs, training=False)
        return ModelOutputs(np.asarray(raw), np.asarray(pooled), None)
    out = fast.run(inputs)  # probabilities, and the checks' features too (training/quantize.py exports both)
    if "features" in out:
        return ModelOutputs(out["probabilities"], out["features"], None)
    # An older int8 file gives probabilities only; the scope checks need Keras's features.
    pooled = np.asarray(loaded.features_and_probabilities(inputs, training=False)[0])
    return ModelOutputs(out["probabilities"], pooled, None)
