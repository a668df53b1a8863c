"""The same film as another hospital, another file or another camera would give it.

The scope checks (pneumo/checks/scope.py) are fitted on these variants of every
training film, children's and adults' alike: what a variant changes can
then not separate the classes, so a check cannot learn "NIH files versus
Guangzhou files" from it (training/checks/scope.py).

    site(image, rng)     another framing, resolution, compression and exposure
    photo(image, rng)    a phone photo of the film (training/checks/photos.py)
    unseen(image, rng)   re-renderings the fits never see, kept for measuring:
                         equalised histogram, a collimation border, a tight crop
"""

import io

import numpy as np
from PIL import Image, ImageOps

from training.checks.photos import photo_of_film


def site(image: Image.Image, rng) -> Image.Image:
    w, h = image.size
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    share = rng.uniform(0.8, 1.0)
    cw, ch = min(w, int(w * share * np.sqrt(aspect))), min(h, int(h * share / np.sqrt(aspect)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    side = int(rng.integers(256, 1024))
    out = out.resize((side, max(64, int(side * ch / cw))), Image.Resampling.BILINEAR)
    gamma = rng.uniform(0.7, 1.4)
    out = out.point(lambda v: 255 * (v / 255) ** gamma)
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def photo(image: Image.Image, rng) -> Image.Image:
    return photo_of_film(image, rng)


def unseen(image: Image.Image, rng) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:
        return ImageOps.equalize(image)
    if kind == 1:
        border = int(min(image.size) * rng.uniform(0.04, 0.1))
        return ImageOps.expand(image.crop((border, border, image.width - border, image.height - border)),
                               border, fill=int(rng.choice([0, 255])))
    w, h = image.size
    return image.crop((int(w * 0.1), int(h * 0.08), int(w * 0.9), int(h * 0.92)))


VARIANTS = {"site": site, "photo": photo, "unseen": unseen}
