"""From a decoded image to a verdict, probabilities and a Grad-CAM heatmap."""

from dataclasses import dataclass, field

import numpy as np

from .calibration import calibrate
from .classes import CLASSES, pneumonia_probability
from .ood import ood_warnings
from .preprocess import preprocess


@dataclass
class Prediction:
    label: str  # NORMAL or PNEUMONIA, by the model's saved threshold
    pneumonia_probability: float
    probabilities: dict  # NORMAL, BACTERIAL, VIRAL; they sum to 1
    warnings: list = field(default_factory=list)
    heatmap: np.ndarray | None = None  # (h, w) in [0, 1] over the squashed image

    def as_dict(self):
        return {
            "label": self.label,
            "pneumonia_probability": self.pneumonia_probability,
            "probabilities": self.probabilities,
            "warnings": self.warnings,
        }


def predict_image(loaded, image, with_heatmap=True) -> Prediction:
    """One decoded PIL image -> Prediction (with a heatmap unless asked not to)."""
    inputs = preprocess(image, loaded.config["image_size"])
    if with_heatmap:
        raw, maps, pooled = loaded.gradcam(inputs)
        return _verdict(loaded, raw[0], maps[0], image, pooled[0])
    return predict_inputs(loaded, inputs, [image])[0]


def predict_batch(loaded, images, batch_size=16) -> list[Prediction]:
    """Many decoded PIL images -> Predictions, without heatmaps, in batches."""
    size = loaded.config["image_size"]
    inputs = np.concatenate([preprocess(image, size) for image in images]) if images else np.empty((0,))
    return [p for start in range(0, len(images), batch_size)
            for p in predict_inputs(loaded, inputs[start:start + batch_size], images[start:start + batch_size])]


def predict_inputs(loaded, inputs, images=None) -> list[Prediction]:
    """Model inputs -> Predictions without heatmaps. With the decoded `images`
    the not-a-chest-X-ray check also looks at their colour and noise."""
    pooled, raw = _features_and_probabilities(loaded, inputs)
    images = [None] * len(raw) if images is None else images
    return [_verdict(loaded, row, None, image, features) for row, image, features in zip(raw, images, pooled)]


def _features_and_probabilities(loaded, inputs):
    """(pooled Grad-CAM-layer features, raw probabilities), from one forward pass."""
    fast = getattr(loaded, "fast", None)  # the int8 model when there is one (pneumo/fast.py)
    if fast is None:
        pooled, raw = loaded.features_and_probabilities(inputs, training=False)
        return np.asarray(pooled), np.asarray(raw)
    out = fast.run(inputs)  # probabilities, and the check's features too (training/quantize.py exports both)
    raw = out["probabilities"]
    if loaded.ood_check is None:
        return [None] * len(raw), raw
    if "features" in out:
        return out["features"], raw
    # An older int8 file gives probabilities only; the check needs Keras's features.
    return np.asarray(loaded.features_and_probabilities(inputs, training=False)[0]), raw


def _verdict(loaded, raw_probabilities, heatmap=None, image=None, pooled=None) -> Prediction:
    probabilities = calibrate(raw_probabilities, loaded.config)
    sick = float(pneumonia_probability(probabilities))
    return Prediction(
        label="PNEUMONIA" if sick >= loaded.config["threshold"] else "NORMAL",
        pneumonia_probability=sick,
        probabilities={name: float(p) for name, p in zip(CLASSES, probabilities)},
        warnings=ood_warnings(image, pooled, loaded.ood_check),
        heatmap=heatmap,
    )
