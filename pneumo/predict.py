"""From a decoded image to a verdict, probabilities and a Grad-CAM heatmap."""

from dataclasses import dataclass, field

import numpy as np

from .calibration import apply_temperature
from .classes import CLASSES, pneumonia_probability
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
        raw, maps = loaded.gradcam(inputs)
        return _verdict(loaded, raw[0], maps[0])
    return predict_inputs(loaded, inputs)[0]


def predict_batch(loaded, images, batch_size=16) -> list[Prediction]:
    """Many decoded PIL images -> Predictions, without heatmaps, in batches."""
    size = loaded.config["image_size"]
    inputs = np.concatenate([preprocess(image, size) for image in images]) if images else np.empty((0,))
    return [p for start in range(0, len(images), batch_size)
            for p in predict_inputs(loaded, inputs[start:start + batch_size])]


def predict_inputs(loaded, inputs) -> list[Prediction]:
    raw = np.asarray(loaded.keras_model(inputs, training=False))
    return [_verdict(loaded, row) for row in raw]


def _verdict(loaded, raw_probabilities, heatmap=None) -> Prediction:
    probabilities = apply_temperature(raw_probabilities, loaded.config.get("temperature", 1.0))
    sick = float(pneumonia_probability(probabilities))
    return Prediction(
        label="PNEUMONIA" if sick >= loaded.config["threshold"] else "NORMAL",
        pneumonia_probability=sick,
        probabilities={name: float(p) for name, p in zip(CLASSES, probabilities)},
        heatmap=heatmap,
    )
