"""A result as a picture for people: the film in grey, the heatmap blended over it, the lungs
outlined and the zones named in a caption. The app shows it; `pneumo predict --heatmaps` writes it.

    picture(analysis) -> PIL image, or None without a heatmap (no verdict)
    overlay(image, heatmap, lungs, caption) -> the same from its parts
"""

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
    colours = _COLOUR_TABLE[heat]  # a table lookup per pixel: cheaper than interpolating each one
    alpha = (strength / 255.0) * heat[..., None].astype(np.float32)  # cold areas stay plain X-ray
    base = np.asarray(grey, dtype=np.float32)[..., None]
    picture = Image.fromarray(np.uint8(base * (1 - alpha) + colours * alpha))
    if outlines:
        picture = _with_outlines(picture, outlines)
    return _with_caption(picture, caption) if caption else picture


def _near(mask: np.ndarray, size) -> np.ndarray:
    """A bool mask, widened by LUNG_MARGIN of its own pixels, at `size` (width, height): 0 or 1."""
    from scipy import ndimage

    wide = ndimage.binary_dilation(np.asarray(mask, bool), iterations=LUNG_MARGIN)
    return np.asarray(Image.fromarray(np.uint8(wide)).resize(size, Image.Resampling.NEAREST), np.uint8)


def _with_outlines(picture: Image.Image, outlines: dict) -> Image.Image:
    """The outlines drawn smooth: on a layer SMOOTHING times larger, scaled down over the picture."""
    width, height = picture.width * SMOOTHING, picture.height * SMOOTHING
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for name, points in outlines.items():
        if points:
            draw.line([(x * width, y * height) for x, y in points], fill=(*OUTLINE[name], 255),
                      width=2 * SMOOTHING, joint="curve")
    layer = layer.resize(picture.size, Image.Resampling.LANCZOS)
    return Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")


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
