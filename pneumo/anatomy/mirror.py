"""Is the film mirrored? The heart says.

On a frontal chest film the heart lies mostly on the image's right (the
patient's left). When the segmenter (pneumo/anatomy/segmenter.py) finds it
mostly on the image's left, the film was mirrored on its way here (a
scanner, a viewer's flip, a slide), or, rarely, the patient's heart is on
the right (dextrocardia). Either way the zones must follow the anatomy the
heart shows, so the film is mirrored back before the model reads it, and a
warning says so: a lung named "right" is then the one on the heart's other
side.

    unmirrored(film, anatomy) -> film or None    mirrored back, with a warning, when the heart says so
"""

from dataclasses import replace

import numpy as np
from PIL import ImageOps

# The heart's share on the image's left of the chest's middle, above which the film is taken as mirrored.
# Upright films put about a third of the heart there, mirrored ones about two thirds. A film taken for
# mirrored is read mirrored back, so a wrong call names the wrong sides: the cut favours upright films
# (benchmarks/anatomy_checks.py: 1.3% of upright val/ children and 0.3% of upright adults called mirrored,
# 75% of mirrored children and 82-94% of mirrored adults caught; at 0.5, 4.6% and 89-99%).
MIRRORED_SHARE = 0.6

MIRRORED = ("The film looks mirrored: the heart is on the image's left. It was mirrored back before analysis, "
            "so the zones name the patient's sides as the heart shows them (were the patient's heart on the right, "
            "dextrocardia, the sides would be swapped).")


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


def is_mirrored(anatomy) -> bool:
    share = heart_share_on_image_left(anatomy)
    return share is not None and share > MIRRORED_SHARE


def unmirrored(film, anatomy):
    """A pneumo.inputs.photo.Film and its Anatomy -> the film mirrored back, with a warning, when the heart
    lies on the image's left (else None). Its anatomy is then the segmenter's of the film mirrored back
    (the caller's second pass), so that a mirrored upload reads exactly as the original would."""
    if not is_mirrored(anatomy):
        return None
    return replace(film, image=ImageOps.mirror(film.image), mirrored=True, warnings=[*film.warnings, MIRRORED])
