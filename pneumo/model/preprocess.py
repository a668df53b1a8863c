"""The one preprocessing path shared by training and serving.

An image becomes model input in two steps, split so that training can
augment in between:

    to_pixels(image, size)   -> uint8 (size, size) greyscale
    to_model_input(pixels)   -> float32 (..., size, size, 3)

`preprocess(image, size)` chains them for serving.
"""

import numpy as np
from PIL import Image

from pneumo.model.run_folder import TARGET_MEAN, TARGET_STD
from pneumo.model.run_folder import VGG_MEAN_BGR as _VGG_MEAN_BGR

# The constants are the run folder's (pneumo/model/run_folder.py): training and serving share them.
VGG_MEAN_BGR = np.array(_VGG_MEAN_BGR, dtype=np.float32)


def to_pixels(image: Image.Image, size: int) -> np.ndarray:
    """Greyscale and squash the whole image to size x size.

    The training images were squashed to a square without keeping the aspect
    ratio, so uploads are squashed the same way rather than cropped.
    """
    grey = image.convert("L")
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 greyscale (..., H, W) -> standardised VGG input (..., H, W, 3)."""
    x = pixels.astype(np.float32)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    x = np.clip((x - mean) / (std + 1e-6) * TARGET_STD + TARGET_MEAN, 0.0, 255.0)
    return x[..., None] - VGG_MEAN_BGR


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """A decoded image -> a batch of one model input."""
    return to_model_input(to_pixels(image, size))[None]
