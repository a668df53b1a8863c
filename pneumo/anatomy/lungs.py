"""The lung fields of a frontal chest film, and their zones, by classical image processing.

    lung_fields(image) -> LungFields | None    None when no pair of lungs is found

On a frontal film the lungs are two dark (air-filled) regions inside the
brighter body, one on each side of the bright mediastinum and spine. So, on
a copy of the film squashed to FIELD_SIDE px, its 2nd-98th percentiles
stretched to 0-1:

1. the mediastinum is the brightest column near the middle (the mean over
   the chest's rows);
2. on each side, the lung is the darkest valley of the column profile
   within reach of the middle; its inner and outer edges are where the
   profile climbs halfway back up;
3. over the lung's columns, the apex and the diaphragm are where the row
   profile climbs 60% of the way back up from the lung's darkest row;
4. pneumonia makes a lung bright, so its box is often missed or cut short:
   a lung not found mirrors the other across the mediastinum, and a lung
   much shorter than the other takes its rows;
5. the dark lung is not all of the lung: the lower lobes reach down
   behind the diaphragm's dome and in behind the heart, and the lung runs
   out to the ribs. So each box reaches a fifth of its height further down
   and 15% of its width further out and in (not past the mediastinum).
   Radiologists box opacities there: before this step 61% of the area of
   their boxes lay inside the fields on average, after it 81%
   (benchmarks/localisation.py's boxed adult films). The dark lung before
   this step stays on as `aerated`: the adult answer pools over it, since
   pooled over the whole lungs it ranked opacities lower (docs/benchmarks.md);
6. each box gets a lung's outline (narrow apex towards the middle; the
   costophrenic angle lower than the diaphragm's dome by the heart). An
   outline from the box, not from dark pixels: a consolidation (bright,
   the very thing to locate) stays inside its lung's field.

Upper, middle and lower zones are thirds of each lung's height, the usual
radiographic division (roughly: above the 2nd, between the 2nd and 4th,
below the 4th anterior rib). Names are the patient's: the patient's right
lung is on the image's left on a frontal film.

Sanity checks (on the dark lungs, before step 5) reject what is not a pair
of lungs (sizes, heights, the two sides overlapping vertically, both darker
than the mediastinum), so a blank
page or noise gives None rather than invented lungs; some photos of other
things still pass (benchmarks/lung_fields.py), which is why a location is
only given after the scope check has accepted the film as a chest X-ray.
Validated by eye on contact sheets (benchmarks/lung_fields.py --sheets).
numpy and scipy.ndimage only: a few milliseconds.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

FIELD_SIDE = 128  # the film is squashed to this square, as the model sees it
LEVELS = ("upper", "middle", "lower")
# The patient's side for each half of the image: the patient's right is on the image's left.
SIDES = ("right", "left")
ZONES = tuple(f"{side} {level}" for side in SIDES for level in LEVELS)

MIN_LUNG_SHARE = 0.025  # a lung smaller than this share of the film is noise or a shadow
MAX_LUNG_SHARE = 0.35  # larger: background, not a lung
MIN_LUNG_HEIGHT, MAX_LUNG_HEIGHT = 0.25, 0.9  # of the film's height
SHORT_LUNG = 0.75  # a lung shorter than this share of the other is taken to be cut short by an opacity
MIN_VERTICAL_OVERLAP = 0.5  # the two lungs share at least half of the shorter one's rows
MEDIASTINUM_HALF_WIDTH = 6  # px at FIELD_SIDE: a lung's darkest column lies at least this far from the middle
MAX_LUNG_REACH = 0.47  # of the film's width: how far from the middle a lung's chest wall may be
VALLEY_REACH = 0.33  # of the film's width: how far from the middle a lung's darkest column may be
EDGE_LEVEL = 0.5  # a lung's edge: halfway from its darkest level back up to the brightness around it
ROW_EDGE_LEVEL = 0.6  # the same for the apex and the diaphragm (ribs and vessels make lungs mottled)
MIN_CONTRAST = 0.08  # the mediastinum is at least this much brighter than the lung (of the 0-1 range)
MIN_FIELD_CONTRAST = 0.08  # the same for the whole lung field (X-rays: 99% of them above 0.09)
APEX_WIDTH, APEX_DEPTH = 0.35, 0.35  # the apex: this share of the width at the top, full width this far down
DOME_RISE = 0.12  # the diaphragm's dome near the heart stands this share of the height above the lateral angle
# Beyond the dark lung (`_reaching`), as shares of its box's height (down) and width (out, in)
BASE_REACH, WALL_REACH, HEART_REACH = 0.2, 0.15, 0.15


@dataclass
class LungFields:
    """Masks on the FIELD_SIDE x FIELD_SIDE squashed film (row 0 at the top)."""
    right: np.ndarray  # the patient's right lung (the image's left), bool
    left: np.ndarray  # the patient's left lung (the image's right), bool
    assumed: bool = False  # True: not found on the film, but where lungs usually lie (pneumo/anatomy/location.py)
    # The dark, air-filled part of the lungs, before step 5 reached further; None: the same as the lungs
    aerated: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        """The lungs: where zones lie and evidence may be named."""
        return self.right | self.left

    @property
    def aerated_mask(self) -> np.ndarray:
        """The dark lung: what the adult answer pools its features over (pneumo/answers/adult.py)."""
        return self.mask if self.aerated is None else self.aerated

    def zones(self) -> dict[str, np.ndarray]:
        """Zone name -> its bool mask (thirds of each lung's height)."""
        out = {}
        for side, lung in zip(SIDES, (self.right, self.left)):
            rows = np.flatnonzero(lung.any(axis=1))
            edges = np.linspace(rows[0], rows[-1] + 1, len(LEVELS) + 1)
            row_index = np.arange(lung.shape[0])[:, None]
            for level, top, bottom in zip(LEVELS, edges, edges[1:]):
                out[f"{side} {level}"] = lung & (row_index >= top) & (row_index < bottom)
        return out

    def zone_map(self) -> np.ndarray:
        """(FIELD_SIDE, FIELD_SIDE) int: the index in ZONES of each pixel's zone, -1 outside the lungs."""
        out = np.full(self.right.shape, -1, np.int8)
        for name, zone in self.zones().items():
            out[zone] = ZONES.index(name)
        return out


def fields_of(anatomy) -> LungFields | None:
    """The lungs a segmenter drew (pneumo/anatomy/segmenter.py Anatomy) -> LungFields on the FIELD_SIDE
    square, or None without a lung. The drawn lungs are the visible, aerated lung (`aerated`); as in
    step 5 each field also reaches down behind the diaphragm's dome and in behind the heart, where
    radiologists box opacities too. A lung whitened by pneumonia may go undrawn: as in step 4, it is
    then the other lung mirrored across the middle of the chest (the heart's, or the film's)."""
    if anatomy is None or (anatomy.right is None and anatomy.left is None):
        return None
    right, left = (None if mask is None else _on_field_square(mask) for mask in (anatomy.right, anatomy.left))
    if right is None or left is None:
        drawn = right if right is not None else left
        heart = _on_field_square(anatomy.heart) if anatomy.heart is not None else None
        middle = np.nonzero(heart)[1].mean() if heart is not None and heart.any() else (FIELD_SIDE - 1) / 2
        mirrored = np.zeros_like(drawn)
        rows, cols = np.nonzero(drawn)
        cols = np.round(2 * middle - cols).astype(int)
        keep = (cols >= 0) & (cols < FIELD_SIDE)
        mirrored[rows[keep], cols[keep]] = True
        right, left = (drawn, mirrored) if right is not None else (mirrored, drawn)
    if not right.any() or not left.any():
        return None
    n = FIELD_SIDE
    middle = (np.flatnonzero(right.any(axis=0))[-1] + np.flatnonzero(left.any(axis=0))[0]) // 2
    reached = (_field(_reaching(_box_of(lung), side, middle, n), side, (n, n)) | lung
               for lung, side in ((right, -1), (left, 1)))
    return LungFields(*reached, aerated=right | left)


def _on_field_square(mask: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(np.uint8(mask) * 255).resize((FIELD_SIDE, FIELD_SIDE),
                                                                    Image.Resampling.BILINEAR)) >= 128


def _box_of(mask: np.ndarray) -> tuple:
    """(top, bottom, inner-or-outer low column, high column) of a mask, as the profiles' boxes are."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def lung_fields(image: Image.Image) -> LungFields | None:
    """A film (any mode) -> its two lung fields, or None when it does not show a pair of lungs."""
    grey = _standardised(image)
    middle = _mediastinum_column(grey)
    boxes = _completed([_lung_box(grey, middle, side) for side in (-1, 1)], middle, grey.shape[0])
    if boxes is None or not _plausible(*boxes, grey.shape[0]):
        return None
    right, left = (_field(box, side, grey.shape) for box, side in zip(boxes, (-1, 1)))
    if not _darker_than_mediastinum(grey, middle, boxes, (right, left)):
        return None
    reached = (_field(_reaching(box, side, middle, grey.shape[0]), side, grey.shape) | dark
               for box, side, dark in zip(boxes, (-1, 1), (right, left)))
    return LungFields(*reached, aerated=right | left)


def _standardised(image: Image.Image) -> np.ndarray:
    """Squashed to FIELD_SIDE, percentiles 2-98 stretched to [0, 1], lightly smoothed."""
    grey = np.asarray(image.convert("L").resize((FIELD_SIDE, FIELD_SIDE), Image.Resampling.BILINEAR, reducing_gap=3.0),
                      np.float32)
    low, high = np.percentile(grey, (2, 98))
    grey = np.clip((grey - low) / max(high - low, 1.0), 0, 1)
    return ndimage.uniform_filter(grey, 3)


def _lung_box(grey: np.ndarray, middle: int, side: int):
    """(top, bottom, inner, outer) rows and columns of the lung on one side of the mediastinum
    (side -1: the image's left), from brightness profiles; None when there is no dark valley."""
    n = grey.shape[0]
    band = grey[int(0.25 * n): int(0.75 * n)].mean(axis=0)
    band = ndimage.uniform_filter1d(band, 5)
    columns = np.arange(middle, -1, -1) if side < 0 else np.arange(middle, n)
    profile = band[columns]
    reach = min(len(profile), int(MAX_LUNG_REACH * n))  # a lung lies within this of the middle
    if reach <= MEDIASTINUM_HALF_WIDTH + 2:
        return None
    valley = MEDIASTINUM_HALF_WIDTH + int(np.argmin(profile[MEDIASTINUM_HALF_WIDTH:int(VALLEY_REACH * n)]))
    if profile[0] - profile[valley] < MIN_CONTRAST:
        return None  # no darker lung beside a brighter mediastinum
    inner_level = profile[valley] + EDGE_LEVEL * (profile[0] - profile[valley])
    inner = valley - _crossing(profile[:valley + 1][::-1], inner_level)
    outside = profile[valley:reach]
    outer = valley + _crossing(outside, profile[valley] + EDGE_LEVEL * (outside.max() - profile[valley]))
    lo, hi = sorted((int(columns[inner]), int(columns[outer])))
    rows = ndimage.uniform_filter1d(grey[:, lo:hi + 1].mean(axis=1), 7)
    deepest = int(np.argmin(rows[int(0.2 * n): int(0.75 * n)])) + int(0.2 * n)
    # The apex and the diaphragm: where the rows, going up and down from the lung's darkest row,
    # come back up to ROW_EDGE_LEVEL of the way to the bright rows (shoulders and neck; liver and heart).
    above, below = rows[:deepest + 1][::-1], rows[deepest:]
    top = deepest - _crossing(above, rows[deepest] + ROW_EDGE_LEVEL * (above.max() - rows[deepest]))
    bottom = deepest + _crossing(below, rows[deepest] + ROW_EDGE_LEVEL * (below.max() - rows[deepest]))
    return top, bottom, lo, hi


def _reaching(box, side, middle, n):
    """The dark lung's box -> the lung's: on a frontal film the lower lobes reach down behind the
    diaphragm's dome and in behind the heart, and the lung runs out to the ribs, past where the
    dark profile climbs halfway up. Radiologists box opacities there too (benchmarks/localisation.py)."""
    top, bottom, lo, hi = box
    height, width = bottom - top, hi - lo
    bottom = min(n - 1, round(bottom + BASE_REACH * height))
    wall, heart = round(WALL_REACH * width), round(HEART_REACH * width)
    if side < 0:  # the image's left: the chest wall at `lo`, the mediastinum at `hi`
        return top, bottom, max(0, lo - wall), min(middle - 1, hi + heart)
    return top, bottom, max(middle + 1, lo - heart), min(n - 1, hi + wall)


def _crossing(profile: np.ndarray, level: float) -> int:
    """The first index at which `profile` reaches `level` (its last index if it never does)."""
    above = np.flatnonzero(profile >= level)
    return int(above[0]) if len(above) else len(profile) - 1


def _field(box, side, shape) -> np.ndarray:
    """The lung's outline inside its box: narrow at the apex (top, towards the middle),
    full width lower down, the costophrenic angle lower than the diaphragm's dome near the heart."""
    top, bottom, lo, hi = box
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    v = (rows - top) / max(bottom - top, 1)
    across = (cols - lo) / max(hi - lo, 1)
    u = across if side > 0 else 1 - across  # 0 at the mediastinum, 1 at the chest wall
    lateral = np.minimum(1.0, APEX_WIDTH + (1 - APEX_WIDTH) * np.sqrt(np.clip(v, 0, 1) / APEX_DEPTH))
    dome = 1.0 - DOME_RISE * (1 - np.clip(u, 0, 1))
    return (v >= 0) & (v <= dome) & (u >= 0) & (u <= lateral)


def _mediastinum_column(grey: np.ndarray) -> int:
    """The brightest column near the film's middle (the spine and mediastinum), by its mean over the chest."""
    n = grey.shape[1]
    profile = grey[n // 5: 4 * n // 5].mean(axis=0)
    window = slice(int(0.35 * n), int(0.65 * n))
    return window.start + int(np.argmax(ndimage.uniform_filter1d(profile, 5)[window]))


def _completed(boxes, middle, n):
    """Pneumonia makes a lung bright, so its box is often missed or cut short: a lung not found
    is the mirror image of the other across the mediastinum, and a lung much shorter than the
    other takes the other's rows (the two lungs reach about as high and as low). None when
    neither lung looks like one."""
    good = [box is not None and _lung_like(box, n) for box in boxes]
    if not any(good):
        return None
    if not all(good):
        top, bottom, lo, hi = boxes[good.index(True)]
        mirrored = (top, bottom, max(0, 2 * middle - hi), min(n - 1, 2 * middle - lo))
        return [boxes[0], mirrored] if good[0] else [mirrored, boxes[1]]
    heights = [box[1] - box[0] for box in boxes]
    short, tall = int(np.argmin(heights)), int(np.argmax(heights))
    if heights[short] < SHORT_LUNG * heights[tall]:
        boxes[short] = boxes[tall][:2] + boxes[short][2:]
    return boxes


def _lung_like(box, n) -> bool:
    top, bottom, lo, hi = box
    return MIN_LUNG_HEIGHT * n <= bottom - top <= MAX_LUNG_HEIGHT * n and \
        MIN_LUNG_SHARE <= (bottom - top) * (hi - lo) / n ** 2 <= MAX_LUNG_SHARE


def _darker_than_mediastinum(grey, middle, boxes, fields) -> bool:
    """Both lungs darker than the mediastinum between them: air beside soft tissue and bone.
    (Most pictures that are no X-ray but pass the shape checks fail this one.)"""
    top, bottom = min(box[0] for box in boxes), max(box[1] for box in boxes)
    mediastinum = grey[top:bottom + 1, max(0, middle - 3):middle + 4].mean()
    return all(mediastinum - grey[field].mean() >= MIN_FIELD_CONTRAST for field in fields)


def _plausible(right, left, n) -> bool:
    """Two boxes that look like a pair of lungs: tall enough, not the whole film, side by side."""
    for top, bottom, lo, hi in (right, left):
        share = (bottom - top) * (hi - lo) / n ** 2
        if bottom - top < MIN_LUNG_HEIGHT * n or not MIN_LUNG_SHARE <= share <= MAX_LUNG_SHARE:
            return False
    overlap = min(right[1], left[1]) - max(right[0], left[0])
    return overlap >= MIN_VERTICAL_OVERLAP * min(right[1] - right[0], left[1] - left[0])
