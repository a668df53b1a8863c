"""Realistic phone photos of X-ray films and screens, made from X-ray files.

Used to fit the population check symmetrically (children and adults alike,
so that "looks like a photo" says nothing about age), and by the tests and
benchmarks/scope_eval.py to measure that photos of films keep their verdict.

A photo here is: the film, slightly tilted and keystoned (perspective), lit
by a tinted light (lightbox, lamp or monitor cast), lying on or framed by a
background (desk, wall, monitor bezel, light table), with vignetting, blur,
sensor noise, sometimes screen moiré, saved as a phone JPEG.
"""

import io

import numpy as np
from PIL import Image, ImageFilter

# Multipliers of R, G, B: the light through or off the film.
CASTS = {
    "neutral": (1.0, 1.0, 1.0),
    "warm lamp": (1.0, 0.86, 0.66),
    "cool lightbox": (0.86, 0.95, 1.0),
    "blue monitor": (0.78, 0.88, 1.0),
    "green fluorescent": (0.9, 1.0, 0.86),
    "magenta screen": (1.0, 0.86, 0.98),
}
# Backgrounds as (base RGB, texture strength): around the film in the photo.
BACKGROUNDS = {
    "wooden desk": ((132, 92, 58), 25),
    "grey wall": ((150, 150, 146), 8),
    "black monitor bezel": ((18, 18, 20), 4),
    "white light table": ((235, 238, 242), 5),
    "blue cloth": ((40, 70, 130), 18),
    "green cutting mat": ((40, 110, 70), 10),
}


def photo_of_film(image: Image.Image, rng: np.random.Generator, cast=None, background=None, film_share=None,
                  tilt=None, blur=None, moire=None) -> Image.Image:
    """A grey X-ray -> an RGB phone photo of it. Unset parameters are drawn from `rng`."""
    cast = cast or str(rng.choice(list(CASTS)))
    background = background or str(rng.choice(list(BACKGROUNDS)))
    film_share = film_share if film_share is not None else rng.uniform(0.55, 0.9)
    tilt = tilt if tilt is not None else rng.uniform(-8, 8)
    blur = float(blur if blur is not None else rng.choice([0.0, 0.6, 1.2, 2.0]))
    moire = moire if moire is not None else (cast in ("blue monitor", "magenta screen") and rng.random() < 0.6)

    film = image.convert("L")
    side = int(rng.integers(700, 1100))  # the photo's longer side, before saving
    width, height = (side, int(side * 0.75)) if rng.random() < 0.5 else (int(side * 0.75), side)
    photo = _background(background, (width, height), rng)
    scale = np.sqrt(film_share * width * height / (film.width * film.height))
    film = film.resize((max(8, int(film.width * scale)), max(8, int(film.height * scale))), Image.Resampling.BILINEAR)
    film, mask = _tilted(film, tilt, rng)
    film_rgb = _lit(np.asarray(film, np.float32), CASTS[cast], moire, rng)
    left = int(rng.integers(0, max(1, width - film.width + 1)))
    top = int(rng.integers(0, max(1, height - film.height + 1)))
    photo.paste(Image.fromarray(film_rgb), (left, top), mask)
    photo = _camera(photo, blur, rng)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(70, 93)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _background(name, size, rng) -> Image.Image:
    base, strength = BACKGROUNDS[name]
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    grain = np.sin(x / rng.uniform(3, 9) + np.sin(y / rng.uniform(20, 60)) * 3)  # wood-like streaks, faint on walls
    texture = strength * (0.6 * grain + 0.4 * rng.normal(size=(h, w)))
    rgb = np.clip(np.asarray(base, np.float32) + texture[..., None], 0, 255)
    return Image.fromarray(np.uint8(rgb))


def _tilted(film: Image.Image, degrees, rng) -> tuple[Image.Image, Image.Image]:
    """Rotate and keystone the film; return it and its mask."""
    mask = Image.new("L", film.size, 255)
    film, mask = (im.rotate(degrees, Image.Resampling.BILINEAR, expand=True) for im in (film, mask))
    w, h = film.size
    k = rng.uniform(0, 0.06) * w  # the top edge shorter than the bottom: the phone held below the film
    quad = (k, 0, 0, h, w, h, w - k, 0)  # source corners: top-left, bottom-left, bottom-right, top-right
    film, mask = (im.transform((w, h), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR) for im in (film, mask))
    return film, mask


def _lit(grey: np.ndarray, cast, moire, rng) -> np.ndarray:
    """Film densities seen through a tinted light, with uneven lighting and maybe moiré."""
    h, w = grey.shape
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    light = 1.0 - rng.uniform(0.05, 0.3) * ((x - rng.uniform(0.3, 0.7)) ** 2 + (y - rng.uniform(0.3, 0.7)) ** 2)
    values = (rng.uniform(20, 40) + grey * rng.uniform(0.75, 0.95)) * light
    rgb = values[..., None] * np.asarray(cast, np.float32)
    if moire:
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 7)
        wave = np.sin((np.cos(angle) * x + np.sin(angle) * y) * max(h, w) * 2 * np.pi / period)
        rgb *= 1 + 0.06 * wave[..., None] * np.array([1.0, -0.5, 0.5])  # screen sub-pixels beat with the sensor
    return np.uint8(np.clip(rgb, 0, 255))


def _camera(photo: Image.Image, blur, rng) -> Image.Image:
    if blur:
        photo = photo.filter(ImageFilter.GaussianBlur(blur))
    rgb = np.asarray(photo, np.float32)
    h, w, _ = rgb.shape
    y, x = np.mgrid[0:h, 0:w]
    vignette = 1 - 0.25 * (((x - w / 2) / w) ** 2 + ((y - h / 2) / h) ** 2) * 4
    rgb = rgb * vignette[..., None] + rng.normal(0, rng.uniform(1, 4), rgb.shape)
    return Image.fromarray(np.uint8(np.clip(rgb, 0, 255)))
