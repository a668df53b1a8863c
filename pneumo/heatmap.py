"""Where the model found its evidence for pneumonia, without gradients.

The head is global average pooling -> (dropout) -> dense -> softmax, so the
gradient of the log-odds of pneumonia with respect to the last convolution's
maps is the same at every position: the dense kernel times d(log-odds)/d(logits),
divided by the number of positions (a max-pooling before the average only
moves each window's gradient to its maximum, which leaves the spatial mean
unchanged). Grad-CAM's channel weights are that spatial mean, so the maps,
the probabilities and the kernel give the same heatmap that TensorFlow's
GradientTape did (tests/test_heatmap.py), from any runtime, in numpy.

    heatmaps(maps, probabilities, head_kernel) -> (N, h, w) in [0, 1]
    overlay(image, heatmap, lungs, caption) -> the X-ray with the heatmap blended over it,
                                               the lung fields outlined and the zones named
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .classes import BACTERIAL, NORMAL, VIRAL

# Inside the logarithms, as in the Grad-CAM this replaces: a probability of
# exactly 0 must not give an infinite gradient.
EPSILON = 1e-7

# Dark blue -> red -> yellow: hot areas stand out on a grey X-ray.
HEAT_COLOURS = np.array([[0, 0, 64], [0, 64, 255], [255, 0, 0], [255, 200, 0], [255, 255, 200]], dtype=np.float32)


def log_odds_gradient(probabilities) -> np.ndarray:
    """(N, 3) softmax outputs -> (N, 3) d/d(logits) of log(P(bact.) + P(viral) + eps) - log(P(normal) + eps).

    Log-odds rather than a probability: near 1 a probability saturates and
    its gradient vanishes, so confident cases would get no map."""
    p = np.asarray(probabilities, np.float64)
    sick = p[:, BACTERIAL] + p[:, VIRAL]
    is_sick = np.zeros(p.shape[1])
    is_sick[[BACTERIAL, VIRAL]] = 1.0
    is_normal = np.zeros(p.shape[1])
    is_normal[NORMAL] = 1.0
    # d p_j / d z_k = p_j (delta_jk - p_k), summed over the classes inside each logarithm.
    d_sick = p * is_sick - sick[:, None] * p
    d_normal = p * is_normal - p[:, [NORMAL]] * p
    return d_sick / (sick[:, None] + EPSILON) - d_normal / (p[:, [NORMAL]] + EPSILON)


def channel_weights(probabilities, head_kernel, positions) -> np.ndarray:
    """Grad-CAM's weights (N, C): the gradient of the log-odds on each map, averaged over its `positions`."""
    return log_odds_gradient(probabilities) @ np.asarray(head_kernel, np.float64).T / positions


def heatmaps(maps, probabilities, head_kernel) -> np.ndarray:
    """The last convolution's maps (N, h, w, C), the softmax outputs (N, 3) and
    the dense head's kernel (C, 3) -> float32 heatmaps (N, h, w), each scaled to peak at 1."""
    maps = np.asarray(maps, np.float64)
    return class_activation(maps, channel_weights(probabilities, head_kernel, maps.shape[1] * maps.shape[2]))


def class_activation(maps, weights) -> np.ndarray:
    """Maps (N, h, w, C) and Grad-CAM channel weights (N, C) -> float32 heatmaps (N, h, w), each peaking at 1."""
    cam = np.maximum(np.einsum("nhwc,nc->nhw", np.asarray(maps, np.float64), weights), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    # An all-zero map (nothing raised the odds) stays zero instead of dividing by 0.
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)


OUTLINE = (120, 255, 255)  # the lung fields' outline: cyan, apart from the heat colours
MIN_SIDE = 384  # the overlay is drawn at least this large, so that its caption can be read


def overlay(image: Image.Image, heatmap: np.ndarray, lungs=None, caption=None, max_side=512,
            strength=0.45) -> Image.Image:
    """The X-ray in grey with the heatmap blended over it, at most `max_side` px (at least
    MIN_SIDE, so that the caption stays readable). `lungs` (pneumo.lungs.LungFields): outlined;
    `caption`: written in a band under the image."""
    grey = image.convert("L")
    grey.thumbnail((max_side, max_side))
    if max(grey.size) < MIN_SIDE:
        scale = MIN_SIDE / max(grey.size)
        grey = grey.resize((round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BILINEAR)
    heat = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(grey.size, Image.Resampling.BICUBIC)
    heat = np.asarray(heat)
    colours = _COLOUR_TABLE[heat]  # a table lookup per pixel: cheaper than interpolating each one
    alpha = (strength / 255.0) * heat[..., None].astype(np.float32)  # cold areas stay plain X-ray
    base = np.asarray(grey, dtype=np.float32)[..., None]
    blended = np.uint8(base * (1 - alpha) + colours * alpha)
    if lungs is not None:
        blended[_outline(lungs.mask, grey.size)] = OUTLINE
    picture = Image.fromarray(blended)
    return _with_caption(picture, caption) if caption else picture


def _outline(mask: np.ndarray, size) -> np.ndarray:
    """The border pixels (2 px wide) of a mask, at `size` (width, height)."""
    big = np.asarray(Image.fromarray(np.uint8(mask) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    inner = big.copy()
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            inner &= np.roll(big, shift, axis=axis)
    return big & ~inner


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
