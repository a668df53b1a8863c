"""The lungs and the heart of a frontal chest film, by a small learnt U-Net (ONNX Runtime).

    segmenter = Segmenter.load(folder)        # None when folder/anatomy.onnx is absent
    anatomies = segmenter.segment(images)     # one batched pass: a list of Anatomy
    anatomies[0].outlines()                   # {"right": [[x, y], ...], "left": ..., "heart": ...}

The film is squashed to the model's square (aspect not kept, as the
children's model sees it), turned grey and scaled to 0-1 by its own 1st and
99th percentiles, so that machines' contrast curves matter less. The model
(training/anatomy/segmenter.py) gives a softmax over four classes per pixel:
background, the patient's right lung (the image's left), the patient's left
lung (the image's right), the heart. It learnt from the JSRT films and the
SCR masks (Shiraishi et al., AJR 2000; van Ginneken, Stegmann and Loog,
Medical Image Analysis 2006), which outline the visible lung: the lung
behind the heart and below the dome of the diaphragm is not in them.

Post-processing keeps sane anatomy: per structure the largest connected
component with its holes filled, nothing under MIN_SHARE of the film (None
instead), and the right lung on the image's left of the left lung (labels
swapped otherwise). Names are by position, as in pneumo/anatomy/lungs.py: on
a mirrored film the lung on the image's left is still called `right`.

numpy, PIL, scipy.ndimage, onnxruntime and scikit-image's find_contours (outlines) only.
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pneumo.anatomy.polygon import simplified
from pneumo.model.run_folder import ANATOMY as MODEL_FILE
from pneumo.model.run_folder import ANATOMY_REPORT as INFO_FILE
from pneumo.model.run_folder import BUNDLED_DIR

INPUT_NAME = "image"  # (N, S, S, 1) float32, 0-1
OUTPUT_NAME = "probabilities"  # (N, S, S, 4) softmax
CLASSES = ("background", "right", "left", "heart")
STRUCTURES = ("right", "left", "heart")
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0
MIN_SHARE = 0.02  # a structure smaller than this share of the film is not taken as found
MAX_POINTS = 60  # an outline has at most this many points
OUTLINE_SIGMA = 1.0  # px at the model's size: the mask is smoothed this much before its outline is traced


def grey_of(image: Image.Image) -> Image.Image:
    """Any PIL image -> one grey channel: 'L' for 8-bit images, 'F' for deeper ones (16-bit, float)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def squashed(image: Image.Image, size: int) -> np.ndarray:
    """The film squashed to size x size (bilinear), grey, float32 in its own units."""
    return np.asarray(grey_of(image).resize((size, size), Image.BILINEAR), dtype=np.float32)


def normalised(grey: np.ndarray) -> np.ndarray:
    """Grey pixels -> 0-1 by the image's own 1st-99th percentiles (clipped); a flat image -> zeros."""
    grey = np.asarray(grey, dtype=np.float32)
    low, high = np.percentile(grey, (LOW_PERCENTILE, HIGH_PERCENTILE))
    if high - low < 1e-6:
        return np.zeros_like(grey)
    return np.clip((grey - low) / (high - low), 0.0, 1.0).astype(np.float32)


def model_input(images, size: int) -> np.ndarray:
    """PIL images -> the model's input batch (N, size, size, 1)."""
    return np.stack([normalised(squashed(image, size)) for image in images])[..., None]


@dataclass
class Anatomy:
    """Masks on the model's S x S square (row 0 at the top); None: not found."""
    right: np.ndarray | None  # the patient's right lung, on the image's left
    left: np.ndarray | None  # the patient's left lung, on the image's right
    heart: np.ndarray | None
    probabilities: np.ndarray  # (4, S, S) softmax: background, right, left, heart
    # (S, S) the film as the segmenter read it (`model_input`), kept for the mirror check
    # (pneumo/anatomy/mirror.py), which read the film so again: 1 ms a film; None: not kept
    seen: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.probabilities.shape[-1]

    def masks(self) -> dict:
        return {"right": self.right, "left": self.left, "heart": self.heart}

    @property
    def lungs(self) -> np.ndarray | None:
        """Both lungs, or None when neither was found."""
        found = [m for m in (self.right, self.left) if m is not None]
        return np.logical_or.reduce(found) if found else None

    def mirrored(self) -> "Anatomy":
        """The same anatomy of the film mirrored left to right: the lungs change sides, and names."""
        flip = lambda mask: None if mask is None else mask[:, ::-1].copy()  # noqa: E731
        probabilities = self.probabilities[[0, 2, 1, 3], :, ::-1].copy()
        return Anatomy(flip(self.left), flip(self.right), flip(self.heart), probabilities, flip(self.seen))

    def outlines(self, max_points: int = MAX_POINTS) -> dict:
        """Structure -> closed polygon [[x, y], ...] (first point == last) in 0-1 of the image
        (x to the right, y down), or None when the structure was not found."""
        return {name: (None if mask is None else outline_of(mask, max_points)) for name, mask in self.masks().items()}


class Segmenter:
    """anatomy.onnx in an ONNX Runtime session set up as the model's (pneumo/model/onnx_runtime.py)."""

    def __init__(self, session, info: dict | None = None):
        self.session = session
        self.info = info or {}
        shape = session.get_inputs()[0].shape  # (N, S, S, 1)
        self.size = int(shape[1]) if isinstance(shape[1], int) else int(self.info["input_size"])
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(cls, folder) -> "Segmenter | None":
        """The segmenter of folder/anatomy.onnx (and anatomy.json where present); None when absent."""
        from pneumo.model.onnx_runtime import session

        path = Path(folder) / MODEL_FILE
        if not path.is_file():
            return None
        info_path = Path(folder) / INFO_FILE
        return cls(session(path), json.loads(info_path.read_text()) if info_path.is_file() else None)

    def segment(self, images) -> list[Anatomy]:
        """PIL images (any mode, any size) -> their Anatomy, one batched pass (none for no images)."""
        images = list(images)
        if not images:
            return []
        batch = model_input(images, self.size)
        softmax = np.moveaxis(self.session.run(None, {self.input_name: batch})[0], -1, 1)  # (N, 4, S, S)
        return [anatomy_of(np.ascontiguousarray(p), seen) for p, seen in zip(softmax, batch[..., 0])]


def anatomy_of(probabilities: np.ndarray, seen: np.ndarray | None = None) -> Anatomy:
    """(4, S, S) softmax -> Anatomy: per structure its largest component, holes filled; sides made sane.
    `seen`: the (S, S) input the softmax came from, kept with it."""
    labels = np.argmax(probabilities, axis=0)
    minimum = MIN_SHARE * labels.size
    found = {}
    for index, name in enumerate(STRUCTURES, start=1):
        mask = _largest_component(labels == index)
        found[name] = mask if mask is not None and mask.sum() >= minimum else None
    right, left = _sane_sides(found["right"], found["left"], found["heart"], labels.shape[1])
    return Anatomy(right, left, found["heart"], probabilities, seen)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return _filled(labelled == int(np.argmax(sizes)))


def _filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: what ndimage.binary_fill_holes gives (the background that reaches
    the edge through its 4-neighbours is outside, the rest is filled), by one labelling of the background
    instead of a dilation repeated until nothing changes: 0.2 ms instead of 0.8 on the 192 px square, a film's
    three 1 ms instead of 3.6 of its 67 (cProfile of `analyse` on val/ films, the shared 2-core Xeon)."""
    background, count = ndimage.label(~mask)  # 4-neighbours: binary_fill_holes's default structure
    outside = np.zeros(count + 1, bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False  # label 0: the mask itself
    return ~outside[background]


def _centre_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def _sane_sides(right, left, heart, width):
    """The patient's right lung lies on the image's left: swap two lungs found the other way round;
    a single lung goes to the side it lies on (of the heart's centre if found, else of the middle)."""
    if right is not None and left is not None:
        return (left, right) if _centre_x(right) > _centre_x(left) else (right, left)
    lung = right if right is not None else left
    if lung is None:
        return right, left
    middle = _centre_x(heart) if heart is not None else (width - 1) / 2
    return (lung, None) if _centre_x(lung) < middle else (None, lung)


def outline_of(mask: np.ndarray, max_points: int = MAX_POINTS) -> list[list[float]]:
    """A bool mask on the S x S square -> its outer outline: a closed, smoothed polygon of at most
    max_points points, [[x, y], ...] in 0-1 of the image (pixel i spans [i, i + 1) / S: the
    outline runs along the mask's edge)."""
    from skimage.measure import find_contours  # skimage.measure loads lazily: find_contours alone, 3 ms

    size_y, size_x = mask.shape
    pad = 3
    soft = ndimage.gaussian_filter(np.pad(mask.astype(np.float32), pad), OUTLINE_SIGMA)
    contours = find_contours(soft, 0.5)
    contour = max(contours, key=lambda c: _area(c))
    # points about 1 px apart on a smooth curve: every 3rd is as good for a polygon of <= 60 points,
    # and simplifying it is 3x quicker
    contour = np.vstack([contour[:-1:3], contour[:1]])
    tolerance = 0.5
    polygon = simplified(contour, tolerance)
    while len(polygon) > max_points:
        tolerance *= 1.3
        polygon = simplified(contour, tolerance)
    rows, cols = polygon[:, 0] - pad, polygon[:, 1] - pad
    xy = np.stack([np.clip((cols + 0.5) / size_x, 0, 1), np.clip((rows + 0.5) / size_y, 0, 1)], axis=1)
    points = [[round(float(x), 5), round(float(y), 5)] for x, y in xy]
    points[-1] = list(points[0])
    return points


def _area(contour: np.ndarray) -> float:
    y, x = contour[:, 0], contour[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


@functools.cache
def bundled_segmenter() -> "Segmenter | None":
    """The segmenter this package ships (pneumo/bundled_model/anatomy.onnx), loaded once; None without it."""
    return Segmenter.load(BUNDLED_DIR)
