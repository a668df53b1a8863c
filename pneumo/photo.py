"""Photos of X-ray films and screens: find the film, take off the colour cast.

People often photograph a film on a lightbox or an X-ray on a monitor with a
phone. Such a photo has a colour cast (warm lamp, blue screen), surroundings
(desk, wall, bezel, hands) and some tilt and blur; the X-ray inside is still
grey. So for a colour image:

1. the cast is the typical chromaticity near the centre, where the film is;
2. the film is the region around the centre whose pixels share that cast
   (a flood fill on a small copy); the photo is cropped to it;
3. the crop is white-balanced. If it is then grey, it is the film: the
   model sees it in greyscale. If it is still colourful, this was no film,
   and the image goes on unchanged for the scope check to refuse.

Greyscale images pass through untouched, so training and serving of real
X-rays are not affected.
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .ood import MAX_COLOURFULNESS, statistics

# Channels of a grey image stored as RGB differ by rounding at most; a real
# cast shifts them by more than this (mean over the image, of 255).
GREY_SPREAD = 3.0
WORK_SIDE = 192  # the film is searched on a copy this large
# How far (in chromaticity, r+g+b = 1) a pixel may be from the cast and
# still belong to the film. Film pixels under one light source sit within
# ~0.02; wood, skin and coloured walls are further.
CAST_TOLERANCE = 0.045
DARK = 28  # below this brightness chromaticity is noise: dark pixels count as film
MIN_FILM_SHARE = 0.2  # a "film" smaller than this share of the photo is not trusted: keep the whole photo

PHOTO_NOTE = ("This looks like a photo of an X-ray film or screen: the model used the film only, in greyscale. "
              "A scan or the original file gives a more reliable answer.")


@dataclass
class Film:
    image: Image.Image  # "L" for X-rays and films found in photos; unchanged otherwise
    is_photo: bool = False
    warnings: list = field(default_factory=list)
    box: tuple | None = None  # (left, top, right, bottom) of the film in the photo


def film_of(image: Image.Image) -> Film:
    """A decoded image -> what the model should look at (see the module docstring)."""
    if image.mode == "L":
        return Film(image)
    rgb = np.asarray(image.convert("RGB"), np.float32)
    if np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).mean() <= GREY_SPREAD:
        return Film(image.convert("L"))  # a grey X-ray saved as RGB
    box, gains = _find_film(image.convert("RGB"))
    crop = np.asarray(image.convert("RGB").crop(box), np.float32) * gains
    balanced = Image.fromarray(np.uint8(np.clip(crop, 0, 255)))
    if statistics(balanced)["colourfulness"] > MAX_COLOURFULNESS:
        return Film(image)  # colourful even without the cast: not a film (scope refuses it)
    return Film(balanced.convert("L"), is_photo=True, warnings=[PHOTO_NOTE], box=box)


def _find_film(image: Image.Image) -> tuple[tuple, np.ndarray]:
    """(the film's box in `image`, per-channel gains that neutralise the cast)."""
    small = image.copy()
    small.thumbnail((WORK_SIDE, WORK_SIDE))
    rgb = np.asarray(small.filter(ImageFilter.BoxBlur(1)), np.float32)
    chroma = rgb / np.maximum(rgb.sum(axis=-1, keepdims=True), 1.0)
    bright = rgb.mean(axis=-1) >= DARK
    h, w = bright.shape
    centre = np.zeros_like(bright)
    centre[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    sample = chroma[centre & bright] if (centre & bright).any() else chroma.reshape(-1, 3)
    cast = np.median(sample, axis=0)
    belongs = (np.abs(chroma - cast).sum(axis=-1) < CAST_TOLERANCE) | ~bright
    box = _component_box(belongs, (w // 2, h // 2))
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) < MIN_FILM_SHARE * w * h:
        box = (0, 0, w, h)
    scale = image.width / w, image.height / h
    full = (int(box[0] * scale[0]), int(box[1] * scale[1]),
            int(np.ceil(box[2] * scale[0])), int(np.ceil(box[3] * scale[1])))
    return full, (1.0 / 3.0) / np.maximum(cast, 1e-3)


def _component_box(mask: np.ndarray, seed: tuple) -> tuple | None:
    """The bounding box of the connected part of `mask` that holds `seed`
    (after closing small gaps), or None when the seed is not in the mask."""
    image = Image.fromarray(np.uint8(mask) * 255).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    if image.getpixel(seed) != 255:
        return None
    ImageDraw.floodfill(image, seed, 128)
    return Image.fromarray(np.uint8(np.asarray(image) == 128) * 255).getbbox()
