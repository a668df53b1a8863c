"""A result as a picture for people: the film in grey, the heatmap blended over it, the lungs
outlined and the zones named in a caption. The app shows it; `pneumo predict --heatmaps` writes it.

    picture(analysis) -> PIL image, or None without a heatmap (no verdict)
    overlay(image, heatmap, lungs, caption) -> the same from its parts
"""

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Dark blue -> red -> yellow: hot areas stand out on a grey X-ray.
HEAT_COLOURS = np.array([[0, 0, 64], [0, 64, 255], [255, 0, 0], [255, 200, 0], [255, 255, 200]], dtype=np.float32)


def picture(analysis) -> Image.Image | None:
    """pneumo.analysis.Analysis -> its overlay, as the app shows it; None when it has no heatmap."""
    if analysis.heatmap is None:
        return None
    inside = analysis.fields.mask if analysis.fields is not None else None
    return overlay(analysis.image, analysis.heatmap, analysis.outlines, caption(analysis.location), inside=inside)


def caption(location: dict | None) -> str | None:
    """A short label for the heatmap image: the zones, strongest first."""
    if location is None:
        return None
    zones = location["zones"]
    if not zones:
        return "Strongest evidence: outside the lung fields"
    return f"Strongest evidence: {', '.join(zones)} zone{'s' if len(zones) > 1 else ''}"


OUTLINE = {"right": (120, 255, 255), "left": (120, 255, 255), "heart": (255, 150, 230)}  # apart from the heat colours
MIN_SIDE = 384  # the overlay is drawn at least this large, so that its caption can be read
SMOOTHING = 3  # outlines are drawn this many times larger, then scaled down: smooth edges
LUNG_MARGIN = 4  # px of the lung fields' square (128): the heat kept around the lungs (the heatmap is coarse)


def overlay(image: Image.Image, heatmap: np.ndarray, outlines=None, caption=None, max_side=512,
            strength=0.45, inside=None) -> Image.Image:
    """The X-ray in grey with the heatmap blended over it, at most `max_side` px (at least
    MIN_SIDE, so that the caption stays readable). `outlines`: {"right", "left", "heart": [[x, y], ...]
    in 0-1 of `image`, or None}, drawn over it; `inside`: a mask of the lungs (any size, on `image`),
    outside which the heat is not shown; `caption`: written in a band under the image."""
    grey = image.convert("L")
    grey.thumbnail((max_side, max_side))
    if max(grey.size) < MIN_SIDE:
        scale = MIN_SIDE / max(grey.size)
        grey = grey.resize((round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BILINEAR)
    heat = np.clip(np.asarray(heatmap, np.float32), 0, 1)
    heat = Image.fromarray(np.uint8(heat * 255)).resize(grey.size, Image.Resampling.BICUBIC)
    heat = np.asarray(heat)
    if inside is not None:
        heat = heat * _near(inside, grey.size)
    picture = Image.fromarray(_blend_table(strength)[np.asarray(grey), heat])  # one lookup per pixel
    if outlines:
        picture = _with_outlines(picture, outlines)
    return _with_caption(picture, caption) if caption else picture


def _near(mask: np.ndarray, size) -> np.ndarray:
    """A bool mask, widened by LUNG_MARGIN of its own pixels, at `size` (width, height): 0 or 1."""
    from scipy import ndimage

    wide = ndimage.binary_dilation(np.asarray(mask, bool), iterations=LUNG_MARGIN)
    return np.asarray(Image.fromarray(np.uint8(wide)).resize(size, Image.Resampling.NEAREST), np.uint8)


def _with_outlines(picture: Image.Image, outlines: dict) -> Image.Image:
    """The outlines drawn smooth: each colour's lines on a one-channel mask SMOOTHING times larger,
    averaged down (each pixel the mean of its SMOOTHING x SMOOTHING block) and painted over `picture`
    (changed in place) in that colour, in the order of `outlines`. An RGBA layer scaled down with
    Lanczos looked the same and took most of the picture's time (about 25 of 33 ms on the shared
    2-core machine; benchmarks/serving.py's breakdown)."""
    width, height = picture.width * SMOOTHING, picture.height * SMOOTHING
    masks = {}
    for name, points in outlines.items():
        if points:
            if OUTLINE[name] not in masks:
                masks[OUTLINE[name]] = Image.new("L", (width, height), 0)
            ImageDraw.Draw(masks[OUTLINE[name]]).line([(x * width, y * height) for x, y in points], fill=255,
                                                      width=2 * SMOOTHING, joint="curve")
    for colour, mask in masks.items():
        picture.paste(colour, mask=mask.reduce(SMOOTHING))
    return picture


def _with_caption(picture: Image.Image, caption: str) -> Image.Image:
    """The picture over a dark band with `caption` in white, as large as fits its width (from 1/24 of it)."""
    size = picture.width // 24
    font = ImageFont.load_default(size=size)
    while size > 10 and font.getlength(caption) > picture.width - size:
        size -= 1
        font = ImageFont.load_default(size=size)
    band = size * 2
    out = Image.new("RGB", (picture.width, picture.height + band), (16, 16, 16))
    out.paste(picture, (0, 0))
    ImageDraw.Draw(out).text((size // 2, picture.height + band // 2), caption, fill=(255, 255, 255), font=font,
                             anchor="lm")
    return out


# HEAT_COLOURS spread over the 256 heat levels of an 8-bit heatmap.
_COLOUR_TABLE = np.stack([np.interp(np.arange(256) / 255.0, np.linspace(0, 1, len(HEAT_COLOURS)), HEAT_COLOURS[:, c])
                          for c in range(3)], axis=-1).astype(np.float32)


@lru_cache(maxsize=4)
def _blend_table(strength: float) -> np.ndarray:
    """[grey level, heat level] -> the blended RGB pixel (uint8, 256 x 256 x 3): the grey under the heat's
    colour at `strength` x heat / 255 opacity (cold areas stay plain X-ray). The same float32 arithmetic
    as blending each pixel, done once for the 65,536 pairs instead of for every pixel (a third of the time)."""
    levels = np.arange(256, dtype=np.float32)
    alpha = (strength / 255.0) * levels[None, :, None]
    table = np.uint8(levels[:, None, None] * (1 - alpha) + _COLOUR_TABLE[None, :, :] * alpha)
    table.flags.writeable = False
    return table
