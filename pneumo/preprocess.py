"""The one preprocessing path shared by training and serving.

An image becomes model input in two steps, split so that training can
augment in between:

    to_pixels(image, size)   -> uint8 (size, size) greyscale
    to_model_input(pixels)   -> float32 (..., size, size, 3)

`preprocess(image, size)` chains them for serving.
"""

import numpy as np
from PIL import Image

# BGR means that VGG16 (and HED) were trained with, Caffe style.
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

# Every X-ray is standardised to this mean and spread before the VGG mean is
# taken off. Per-image standardisation removes the exposure and contrast
# differences between the training collection and later ones (measured: it
# lifted a frozen-feature probe on val/ from AUC 0.963 to 0.970).
TARGET_MEAN = 120.0
TARGET_STD = 55.0


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
