"""Is the film mirrored? The chest's two halves say.

On a frontal chest film the heart lies mostly on the image's right (the
patient's left), the left dome of the diaphragm sits lower, with the
stomach's bubble under it, and the aortic knob bulges on that side. When
the film shows these the other way round, it was mirrored on its way here
(a scanner, a viewer's flip, a slide), or, rarely, the patient's heart is on
the right (dextrocardia). Either way the zones must follow the anatomy the
film shows, so the film is mirrored back before the model reads it, and a
warning says so: a lung named "right" is then the one on the heart's other
side.

The check (`MirrorCheck`, pneumo/bundled_model/mirror.npz, fitted by
training/anatomy/mirror.py) reads the chest as the segmenter
(pneumo/anatomy/segmenter.py) drew it: a SIDE x SIDE crop of the film
centred on the chest's middle (midway between the lungs' outer edges), from
the lungs' top to a little below their lowest row, in three channels (the
film's grey levels as the segmenter sees them, the heart's probability, the
lungs' masks). Only the crop's difference from its own mirror image counts
(the left half of crop minus mirrored crop), so a film and its mirror image
get opposite evidence. A logistic regression on it gives the log-odds that
the film is mirrored; above the fitted threshold the film is mirrored back.
The heart's share alone (the check before it, `heart_share_on_image_left`)
stays as the fallback without mirror.npz.

    unmirrored(film, anatomy) -> film or None    mirrored back, with a warning, when the anatomy says so

numpy and Pillow only.
"""

import functools
import logging
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageOps

from pneumo.anatomy.segmenter import normalised, squashed
from pneumo.answers.fitted_file import FittedFile
from pneumo.model.run_folder import BUNDLED_DIR

log = logging.getLogger("pneumo")

SIDE = 32  # the chest crop's side: the layout of the chest, not its detail
BELOW = 0.15  # the crop runs this share of the lungs' height below their lowest row: the domes, the stomach's bubble
CHANNELS = ("grey", "heart", "lungs")  # grey: the segmenter's input; heart: its probability; lungs: both masks

# The heart's share on the image's left of the chest's middle, above which the film is taken as mirrored,
# when the bundled model has no mirror.npz. Upright films put about a third of the heart there, mirrored
# ones about two thirds. On benchmarks/anatomy_checks.py --per-set 200 it caught 74.7% of mirrored val/
# children (1.3% of upright ones called mirrored), 93.0% of JSRT films (0%), 82.0% of adults not read Lung
# Opacity (1.0%) and 71.2% of those read so (1.4%).
MIRRORED_SHARE = 0.6

MIRRORED = ("The film looks mirrored: the heart is on the image's left. It was mirrored back before analysis, "
            "so the zones name the patient's sides as the heart shows them (were the patient's heart on the right, "
            "dextrocardia, the sides would be swapped).")


@dataclass
class MirrorCheck(FittedFile):
    """A logistic regression on the antisymmetric part of the chest crop (`features`).

    Fitted (training/anatomy/mirror.py) on films that no evaluation set holds: one film of each of the 2,761
    children's patients of chest_xray/train that have no film in val/, and the 686 adult_cxr films of the
    open patients (training/adults/locked.py: never a locked one) in the fitting half of them, each film
    upright and mirrored. The threshold lets 0.7% of those upright films through (children and adults each,
    out of fold). On films that no fit saw, mirrored / upright called mirrored (the heart's share alone):
    val/ children 91.1% / 1.0% (74.7% / 1.3%), JSRT 97.2% / 0% (94.3% / 0%), the other half of the open
    adults 91.1% / 1.6% (81.6% / 1.8%), of them those read Lung Opacity 83.3% / 0% (64.8% / 0%).
    Served (benchmarks/anatomy_checks.py --per-set 200, docs/benchmarks.md): val/ children 91.1% (277 of 304)
    / 1.0% (3), JSRT 97.5% / 0% of 200, adults not read Lung Opacity 91.5% / 1.0% of 200, read so 86.3% /
    0.7% of 146, phone photos of val/ films 76.5% / 1.0% of 200."""
    FILE = "mirror.npz"
    coef: np.ndarray  # (len(CHANNELS), SIDE, SIDE // 2)
    intercept: float
    threshold: float  # log-odds above it: mirrored

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        """(N, len(CHANNELS) * SIDE * SIDE // 2) features -> (N,) log-odds that each film is mirrored."""
        return np.asarray(features, np.float64) @ np.ravel(self.coef) + self.intercept

    def mirrored(self, image: Image.Image, anatomy) -> bool:
        """Whether the film (as the segmenter read it) is mirrored; False without two lungs and a heart."""
        found = features(image, anatomy)
        return found is not None and float(self.log_odds(found[None])[0]) > self.threshold


@functools.cache
def bundled_mirror_check() -> "MirrorCheck | None":
    """The check fitted on the bundled segmenter's anatomy (pneumo/bundled_model/mirror.npz), loaded once;
    None when absent or unreadable (the heart's share decides then)."""
    try:
        return MirrorCheck.load(BUNDLED_DIR)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s unreadable (%s): the heart's share alone says whether a film is mirrored",
                    MirrorCheck.FILE, error)
        return None


def _box(anatomy) -> tuple[float, float, float, float]:
    """The chest's box on the segmenter's square: centred on the middle between the lungs' outer edges,
    as wide as the wider half, from the lungs' top to BELOW of their height under their lowest row."""
    outer_left = np.flatnonzero(anatomy.right.any(axis=0))[0]
    outer_right = np.flatnonzero(anatomy.left.any(axis=0))[-1] + 1
    middle = (outer_left + outer_right) / 2
    half = max(middle - outer_left, outer_right - middle)
    rows = np.flatnonzero((anatomy.right | anatomy.left).any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    return middle - half, top, middle + half, bottom + BELOW * (bottom - top)


def _crop(values: np.ndarray, box) -> np.ndarray:
    """(S, S) values -> the box resampled to SIDE x SIDE (bilinear; beyond the square, its edge repeated)."""
    size = values.shape[0]
    pad = size // 2
    padded = Image.fromarray(np.pad(values.astype(np.float32), pad, mode="edge"), mode="F")
    left, top, right, bottom = box
    crop = padded.resize((SIDE, SIDE), Image.BILINEAR,
                         box=(left + pad, top + pad, right + pad, min(bottom, size + pad) + pad))
    return np.asarray(crop, np.float64)


def chest_crop(image: Image.Image, anatomy) -> np.ndarray | None:
    """The film and its anatomy -> (len(CHANNELS), SIDE, SIDE) crops of the chest; None without two lungs
    and a heart. `image` is the film the segmenter read (pneumo/analysis.py films_as_read)."""
    if anatomy is None or anatomy.heart is None or anatomy.right is None or anatomy.left is None:
        return None
    box = _box(anatomy)
    grey = anatomy.seen if anatomy.seen is not None else normalised(squashed(image, anatomy.size))  # what it saw
    lungs = (anatomy.right | anatomy.left).astype(np.float32)
    return np.stack([_crop(grey, box), _crop(anatomy.probabilities[3], box), _crop(lungs, box)])


def features(image: Image.Image, anatomy) -> np.ndarray | None:
    """The chest crop minus its mirror image, its left half only (the right half is its negative), flat:
    (len(CHANNELS) * SIDE * SIDE // 2,); None without two lungs and a heart."""
    crop = chest_crop(image, anatomy)
    if crop is None:
        return None
    return (crop - crop[:, :, ::-1])[:, :, : SIDE // 2].ravel()


def heart_share_on_image_left(anatomy) -> float | None:
    """The share of the heart left of the chest's middle (midway between the lungs' outer edges);
    None without a heart and two lungs."""
    if anatomy is None or anatomy.heart is None or anatomy.right is None or anatomy.left is None:
        return None
    outer_left = np.flatnonzero(anatomy.right.any(axis=0))[0]  # the image's left edge of the lung on that side
    outer_right = np.flatnonzero(anatomy.left.any(axis=0))[-1]
    middle = (outer_left + outer_right + 1) / 2
    columns = np.nonzero(anatomy.heart)[1] + 0.5
    return float((columns < middle).mean())


def is_mirrored(anatomy, image: Image.Image | None = None, check: "MirrorCheck | None" = None) -> bool:
    """Whether the film is mirrored: the check (the bundled one unless given) on the film `image` the
    segmenter read and its anatomy; the heart's share alone without a check or an image."""
    check = check or bundled_mirror_check()
    if check is not None and image is not None:
        return check.mirrored(image, anatomy)
    share = heart_share_on_image_left(anatomy)
    return share is not None and share > MIRRORED_SHARE


def unmirrored(film, anatomy):
    """A pneumo.inputs.photo.Film and its Anatomy -> the film mirrored back, with a warning, when the chest
    looks mirrored (else None). Its anatomy is then the segmenter's of the film mirrored back
    (the caller's second pass), so that a mirrored upload reads exactly as the original would."""
    if not is_mirrored(anatomy, film.image):
        return None
    return replace(film, image=ImageOps.mirror(film.image), mirrored=True, warnings=[*film.warnings, MIRRORED])
