"""Is the upload a chest X-ray at all?

The classifier answers NORMAL / BACTERIAL / VIRAL for anything, a cat
included, so two checks run before a verdict is trusted:

- image statistics, which need nothing fitted: colour, a blank image, noise;
- the model's own view: the pooled features of its Grad-CAM layer, compared
  with the training X-rays' features by Mahalanobis distance in a PCA space
  (fitted by training/checks/ood.py, saved as ood.npz in the run folder). A run
  folder without ood.npz skips this check.

Either one refuses the image (pneumo/checks/scope.py turns that into the scope
`not_chest_xray` and a sentence with the reason).
"""

from dataclasses import dataclass
import numpy as np
from PIL import Image

from pneumo.answers.fitted_file import FittedFile
from pneumo.answers.readout import log_features
from pneumo.model.run_folder import OOD

# Thresholds of the statistics, on a 64 x 64 thumbnail. Measured on the
# 304 val X-rays: colourfulness 0 (all greyscale), grey std 24-78, neighbour
# correlation >= 0.94; textures, text and noise 0.25-0.71. So these sit well
# outside what X-rays do and only catch the obvious cases; the feature check
# does the rest.
STATS_SIZE = 64
MAX_COLOURFULNESS = 15.0  # Hasler and Suesstrunk: 15 is "slightly colourful"
MIN_GREY_STD = 12.0  # of 255: a blank or nearly uniform image
MIN_NEIGHBOUR_CORRELATION = 0.8  # below: noise or a fine texture, not anatomy


def statistics(image: Image.Image) -> dict:
    """Colourfulness, grey spread and neighbour correlation of a decoded image."""
    rgb = np.asarray(image.convert("RGB").resize((STATS_SIZE, STATS_SIZE), Image.Resampling.BILINEAR), np.float64)
    grey = rgb.mean(axis=-1)
    return {"colourfulness": colourfulness(rgb), "grey_std": float(grey.std()),
            "neighbour_correlation": _neighbour_correlation(grey)}


def colourfulness(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Hasler and Suesstrunk's colourfulness of RGB pixels (0-255), of those in `mask` if given."""
    pixels = np.asarray(rgb, np.float64).reshape(-1, 3) if mask is None else np.asarray(rgb, np.float64)[mask]
    rg, yb = pixels[:, 0] - pixels[:, 1], (pixels[:, 0] + pixels[:, 1]) / 2 - pixels[:, 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _neighbour_correlation(grey):
    """Mean correlation of each pixel with its right and lower neighbour:
    near 1 for anatomy at this scale, near 0 for noise."""
    values = []
    for a, b in ((grey[:, :-1], grey[:, 1:]), (grey[:-1], grey[1:])):
        a, b = a - a.mean(), b - b.mean()
        spread = np.sqrt((a * a).sum() * (b * b).sum())
        values.append((a * b).sum() / spread if spread > 0 else 1.0)  # constant: caught by its spread
    return float(np.mean(values))


COLOUR = "it is a colour image, and X-rays are grey"


def statistics_reason(image: Image.Image) -> str | None:
    """Why the statistics say this is no X-ray, or None."""
    s = statistics(image)
    if s["colourfulness"] > MAX_COLOURFULNESS:
        return COLOUR
    if s["grey_std"] < MIN_GREY_STD:
        return "it is blank or almost uniform"
    if s["neighbour_correlation"] < MIN_NEIGHBOUR_CORRELATION:
        return "it looks like noise or a fine texture"
    return None


@dataclass
class FeatureCheck(FittedFile):
    """How far pooled features lie from the training X-rays': a Mahalanobis
    distance along their leading principal components, plus the remainder
    off those components at its mean variance (a probabilistic-PCA distance).
    The remainder matters: photos and other scans mostly differ from X-rays
    in directions that X-rays hardly vary in."""

    mean: np.ndarray  # (features,) of the transformed training features
    components: np.ndarray  # (k, features), orthonormal rows
    scales: np.ndarray  # (k,) standard deviation along each component
    residual_variance: float  # mean variance per feature off the components
    threshold: float  # distances above it are flagged
    # ood.npz; the adult answer's own check is the same kind in adult_check.npz (load(folder, ADULT_CHECK)).
    # A run folder without it: statistics only.
    FILE = OOD

    def distance(self, pooled) -> np.ndarray:
        """(N, features) -> (N,) distances."""
        centred = self.transform(pooled) - self.mean
        projected = centred @ self.components.T
        residual = centred - projected @ self.components
        squared = ((projected / self.scales) ** 2).sum(axis=-1) + (residual ** 2).sum(axis=-1) / self.residual_variance
        return np.sqrt(squared)

    @staticmethod
    def transform(pooled):
        # ReLU features are skewed with long tails; log1p makes them closer
        # to the Gaussian that a Mahalanobis distance assumes.
        return log_features(pooled)


def feature_distance_reason(pooled, check: FeatureCheck | None) -> tuple[str | None, float | None]:
    """(why the model's features say this is no chest X-ray or None, the distance or None)."""
    if pooled is None or check is None:
        return None, None
    distance = float(check.distance(np.asarray(pooled)[None])[0])
    if distance > check.threshold:
        return "it is unlike the chest X-rays the model was trained on", distance
    return None, distance
