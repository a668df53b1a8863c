"""Where the model's evidence for pneumonia lies, in the lungs' terms.

    locate(heatmap, film, size) -> Location    zones, peak and box; plus the lung fields, for drawing
    describe(location) -> str                  the same in one sentence, for people and screen readers

The heatmap (pneumo/model/heatmap.py, on the model's grid) is brought to the lung
step's square, blurred by one cell of that grid and kept only inside the
lung fields (pneumo/anatomy/lungs.py, widened by a few pixels), so that evidence on
markers, text, the heart or outside the body is never named as a zone. Its strongest point is the `peak`; the
connected area around it above half the peak's level is the hottest region,
whose bounding box is `box`; `zones` are the lung zones holding at least
ZONE_SHARE of that region's evidence inside the lungs, strongest first.

Coordinates are fractions (0-1) of the uploaded image, so that a photo's
crop (pneumo/inputs/photo.py) is mapped back: (0, 0) is its top-left corner.
When no pair of lungs is found, the zones come from where the lungs usually
lie on a frontal film (ASSUMED_LUNGS) and `lung_fields` says "assumed".

This is where the model's evidence is, not a delineation of the disease.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from pneumo.anatomy.lungs import FIELD_SIDE, ZONES, LungFields, fields_of, lung_fields

HOT_LEVEL = 0.5  # the hottest region: connected to the peak, at least this share of its level
ZONE_SHARE = 0.25  # a zone is named when it holds at least this share of the hottest region's evidence
MARGIN = 3  # px at FIELD_SIDE: the lung fields are widened by this much (the heatmap is coarse)
# Where the lungs usually lie on a frontal film, as (top, bottom, inner, outer) fractions of the frame:
# used only when the film's own lung fields are not found.
ASSUMED_LUNGS = ((0.12, 0.85, 0.45, 0.12), (0.12, 0.85, 0.55, 0.88))


@dataclass
class Location:
    zones: list  # zone names (pneumo/anatomy/lungs.py ZONES), strongest first
    peak: dict  # {"x", "y"} in [0, 1] of the uploaded image
    box: dict  # {"x", "y", "w", "h"} in [0, 1] of the uploaded image
    lung_fields: str  # "found" on this film, or "assumed" (where lungs usually lie)
    fields: LungFields | None = None  # on the film's FIELD_SIDE square, for the overlay

    def as_dict(self) -> dict:
        return {"zones": self.zones, "peak": self.peak, "box": self.box, "lung_fields": self.lung_fields}


def locate(heatmap: np.ndarray, film, size: tuple, restrict=True, fields=None) -> Location:
    """A heatmap (h, w) in [0, 1] of `film` (pneumo.inputs.photo.Film) -> Location in the uploaded image of `size`.
    restrict=False: the heatmap over the whole frame (the method before the lung fields, for comparison).
    fields: the film's lung fields when already found (`lungs_or_assumed`), else they are found here."""
    fields = fields or lungs_or_assumed(film.image)
    heat = _smoothed(_on_work_square(heatmap), cells=max(np.shape(heatmap)))
    if restrict:
        inside = ndimage.binary_dilation(fields.mask, iterations=MARGIN)
        if (heat * inside).max() > 0:
            heat = heat * inside
    peak_row, peak_col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    hot = _region_around(heat, (peak_row, peak_col))
    rows, cols = np.nonzero(hot)
    to_image = to_upload(film, size)
    corners = [to_image(col / FIELD_SIDE, row / FIELD_SIDE)  # a turn may swap them: take their extremes
               for col in (cols.min(), cols.max() + 1) for row in (rows.min(), rows.max() + 1)]
    (x0, y0), (x1, y1) = np.min(corners, axis=0).tolist(), np.max(corners, axis=0).tolist()
    px, py = to_image((peak_col + 0.5) / FIELD_SIDE, (peak_row + 0.5) / FIELD_SIDE)
    zone_map = fields.zone_map() if restrict else frame_zone_map()
    return Location(_zones(heat * hot, zone_map), {"x": px, "y": py},
                    {"x": x0, "y": y0, "w": round(x1 - x0, 4), "h": round(y1 - y0, 4)},
                    "assumed" if fields.assumed else "found", fields if restrict else None)


def describe(location: dict | None) -> str | None:
    """The location (as in the result) in one sentence; None without one."""
    if location is None:
        return None
    zones = location["zones"]
    if not zones:
        return "The evidence lies mostly outside the lung fields."
    if len(zones) == 1:
        return f"The evidence is strongest in the {zones[0]} zone."
    return f"The evidence is strongest in the {', '.join(zones[:-1])} and {zones[-1]} zones."


def lungs_or_assumed(image: Image.Image, anatomy=None) -> LungFields:
    """The film's own lung fields, or where lungs usually lie when none are found. `anatomy`: the
    film's lungs and heart as the segmenter drew them (pneumo/anatomy/segmenter.py): the fields
    are theirs. Without it, brightness profiles find them (pneumo/anatomy/lungs.py `lung_fields`):
    what the adult answer and its opacity map pool over, as they were fitted (pneumo/answers/adult.py)."""
    if anatomy is None:
        return lung_fields(image) or assumed_fields()
    return fields_of(anatomy) or assumed_fields()


def assumed_fields() -> LungFields:
    """Boxes where the lungs usually lie on a frontal film."""
    masks = []
    for top, bottom, inner, outer in ASSUMED_LUNGS:
        mask = np.zeros((FIELD_SIDE, FIELD_SIDE), bool)
        lo, hi = sorted((inner, outer))
        mask[int(top * FIELD_SIDE):int(bottom * FIELD_SIDE), int(lo * FIELD_SIDE):int(hi * FIELD_SIDE)] = True
        masks.append(mask)
    return LungFields(*masks, assumed=True)


def frame_zone_map() -> np.ndarray:
    """Zones as halves and thirds of the frame, ignoring the lungs (the method before the lung fields)."""
    rows, cols = np.mgrid[0:FIELD_SIDE, 0:FIELD_SIDE]
    return (3 * (cols >= FIELD_SIDE // 2) + np.minimum(3 * rows // FIELD_SIDE, 2)).astype(np.int8)


def _on_work_square(heatmap: np.ndarray) -> np.ndarray:
    image = Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
    return np.asarray(image.resize((FIELD_SIDE, FIELD_SIDE), Image.Resampling.BILINEAR), np.float32)


def _smoothed(heat: np.ndarray, cells: int) -> np.ndarray:
    """The heatmap blurred by one cell of the map it came from: its single hottest cell is noisier
    than the middle of its hot area (on the boxed adult films, peaks in a radiologist's box went
    from 48% to 54%, benchmarks/localisation.py)."""
    return ndimage.gaussian_filter(heat, FIELD_SIDE / cells)


def _region_around(heat: np.ndarray, peak: tuple) -> np.ndarray:
    labels, _ = ndimage.label(heat >= HOT_LEVEL * heat[peak])
    return labels == labels[peak]


def _zones(evidence: np.ndarray, zone_map: np.ndarray) -> list:
    mass = np.bincount(zone_map.ravel() + 1, weights=evidence.ravel(), minlength=len(ZONES) + 1)[1:]
    total = mass.sum()  # the evidence inside the zones: the margin around the lungs names none
    if total <= 0:
        return []
    ranked = np.argsort(-mass, kind="stable")
    return [ZONES[i] for i in ranked if mass[i] >= ZONE_SHARE * total]


def outlines_in_upload(outlines: dict | None, film, size) -> dict | None:
    """Outlines on the film (structure -> [[x, y], ...] in 0-1 of film.image, or None) -> the same in the
    uploaded image of `size` (to_upload)."""
    if outlines is None:
        return None
    to_image = to_upload(film, size)
    return {name: None if points is None else [list(to_image(x, y)) for x, y in points]
            for name, points in outlines.items()}


def to_upload(film, size):
    """Fractions of the film -> fractions (rounded to 4 places) of the uploaded image of `size`:
    into the film as it came when it was mirrored or turned back, then through the photo
    step's crop when there was one. Every coordinate of a result goes through this (docs/result.md)."""
    width, height = size
    left, top, right, bottom = film.box if film.box is not None else (0, 0, width, height)

    def convert(x, y):
        x, y = as_it_came(x, y, film.turned, film.mirrored)
        return (round(float((left + x * (right - left)) / width), 4),
                round(float((top + y * (bottom - top)) / height), 4))
    return convert


def as_it_came(x, y, turned, mirrored=False):
    """A point (fractions, y down) of the film turned back -> the same point on the film as it came,
    `turned` degrees counter-clockwise (PIL's rotate(turned, expand=True) of the upright film), then
    `mirrored` (left to right) when the heart said so (pneumo/anatomy/mirror.py: mirrored back last)."""
    if mirrored:
        x = 1 - x
    return {0: (x, y), 90: (y, 1 - x), 180: (1 - x, 1 - y), 270: (1 - y, x)}[turned % 360]
