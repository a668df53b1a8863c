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

from pneumo.checks.ood import MAX_COLOURFULNESS, colourfulness

# Channels of a grey image stored as RGB differ by rounding at most; a real
# cast shifts them by more than this (mean over the image, of 255).
GREY_SPREAD = 3.0
SEARCH_SIDE = 192  # the film is searched on a copy this large
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
    turned: int = 0  # degrees (counter-clockwise) the film came turned; `image` is turned back (pneumo/inputs/orientation.py)
    mirrored: bool = False  # the film came mirrored (after any turn); `image` is mirrored back (pneumo/anatomy/mirror.py)


def film_of(image: Image.Image) -> Film:
    """A decoded image -> what the model should look at (see the module docstring)."""
    if image.mode == "L":
        return Film(image)
    rgb = np.asarray(image.convert("RGB"), np.float32)
    if np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).mean() <= GREY_SPREAD:
        return Film(image.convert("L"))  # a grey X-ray saved as RGB
    small = image.convert("RGB")
    small.thumbnail((SEARCH_SIDE, SEARCH_SIDE))
    small = np.asarray(small.filter(ImageFilter.BoxBlur(1)), np.float32)
    cast, mask = _cast_and_film(small)
    gains = (1.0 / 3.0) / np.maximum(cast, 1e-3)
    if colourfulness(np.clip(small * gains, 0, 255), mask) > MAX_COLOURFULNESS:
        return Film(image)  # colourful even without the cast: not a film (the scope check refuses it)
    box = _scaled_box(Image.fromarray(np.uint8(mask) * 255).getbbox(), small.shape, image.size)
    crop = np.asarray(image.convert("RGB").crop(box), np.float32) * gains
    film = Image.fromarray(np.uint8(np.clip(crop, 0, 255))).convert("L")
    return Film(film, is_photo=True, warnings=[PHOTO_NOTE], box=box)


def _cast_and_film(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the cast: the film's typical chromaticity, a mask of the film) on a small photo.
    The mask is the whole photo when no film-sized region shares the cast."""
    chroma = rgb / np.maximum(rgb.sum(axis=-1, keepdims=True), 1.0)
    bright = rgb.mean(axis=-1) >= DARK
    h, w = bright.shape
    centre = np.zeros_like(bright)
    centre[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    sample = chroma[centre & bright] if (centre & bright).any() else chroma.reshape(-1, 3)
    cast = np.median(sample, axis=0)
    belongs = (np.abs(chroma - cast).sum(axis=-1) < CAST_TOLERANCE) | ~bright
    film = _component(belongs, (w // 2, h // 2))
    if film is None or film.mean() < MIN_FILM_SHARE:
        film = np.ones_like(belongs)
    return cast, film


def _component(mask: np.ndarray, seed: tuple) -> np.ndarray | None:
    """The connected part of `mask` that holds `seed` (after closing small
    gaps), or None when the seed is not in the mask."""
    image = Image.fromarray(np.uint8(mask) * 255).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    if image.getpixel(seed) != 255:
        return None
    ImageDraw.floodfill(image, seed, 128)
    return np.asarray(image) == 128


def _scaled_box(box, small_shape, size) -> tuple:
    """A box on the small copy -> the same box on the full image."""
    sy, sx = size[1] / small_shape[0], size[0] / small_shape[1]
    return (int(box[0] * sx), int(box[1] * sy), int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy)))
