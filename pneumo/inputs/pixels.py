"""What both decoders (pneumo/inputs/decode.py, pneumo/inputs/dicom.py) share: the limits,
the upload's error type, Pillow opened header first, and the conversions of
pixels to 8 bits at a bounded size. Neither decoder imports the other's
internals through here, so the two stay one-way: decode -> dicom -> pixels.
"""

import io
import math
import warnings

import numpy as np
from PIL import Image

MAX_PIXELS = 50_000_000
MIN_SIDE = 64
MAX_SIDE = 2048
# A chest X-ray is about as wide as tall. Past 16:1 an image is a strip, not a
# film; refusing it also guarantees that shrinking the long side to MAX_SIDE
# leaves at least MIN_SIDE px on the short one (a 64 x 140000 strip would
# otherwise shrink to nothing).
MAX_ASPECT_RATIO = 16
MAX_JPEG_SCANS = 64
# One 50-megapixel 16-bit frame plus room for the header.
MAX_INFLATED_BYTES = 2 * MAX_PIXELS + 4 * 1024 * 1024

# Pillow refuses images of more than twice this outright and warns above it;
# the warning is turned into a refusal below, so Pillow agrees with MAX_PIXELS.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

SUPPORTED = "JPEG, PNG, BMP, TIFF, WebP, GIF or DICOM"


class InputError(ValueError):
    """The upload cannot be used; the message says why, for the uploader (the app's words).
    `words_for(entry)`: the same message in the words of another entry point (OWN_WORDS)."""

    def words_for(self, entry: str) -> str:
        return words_for(str(self), entry)


# Who reads a refusal: the app's uploader, the command line's user, an AI assistant through the MCP tool.
APP, COMMAND, MCP = "app", "command", "mcp"
# The refusals of pneumo/inputs speak to the app's uploader. The same facts in the other entry points' words:
# the app's phrase -> (the command's, the MCP tool's). tests/test_entry_words.py checks that no message of
# pneumo/inputs leaves an upload or a server in the command's words.
OWN_WORDS = {
    "please upload it again": ("please copy or export it again", "please send it again"),
    "Please upload": ("Please use", "Please send"),
    "this server allows": ("the decoder's limits allow (PNEUMO_DECODE_*)", "this server allows"),
    "this server can": ("pneumo can", "this server can"),
    "this server cannot": ("pneumo cannot", "this server cannot"),
    "The server is busy decoding other uploads": ("The decoders are busy with other files",
                                                  "The server is busy decoding other files"),
}


def words_for(message: str, entry: str) -> str:
    """A refusal (in the app's words) in the words of `entry` (APP, COMMAND or MCP)."""
    if entry == APP:
        return message
    column = {COMMAND: 0, MCP: 1}[entry]
    for phrase, words in OWN_WORDS.items():
        message = message.replace(phrase, words[column])
    return message


def check_size(width: int, height: int) -> None:
    """Refuse images too large to decode safely or too small to read."""
    if width * height > MAX_PIXELS:
        raise InputError(
            f"The image is {width} x {height} pixels, more than the {MAX_PIXELS // 1_000_000} "
            "megapixels accepted. Please upload a smaller export of the X-ray."
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(
            f"The image is only {width} x {height} pixels; at least {MIN_SIDE} pixels on each "
            "side are needed to read an X-ray."
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InputError(
            f"The image is {width} x {height} pixels: one side is more than {MAX_ASPECT_RATIO} times the other, "
            "and a chest X-ray is about as wide as tall. Please upload the X-ray itself."
        )


def reduction_factor(width: int, height: int) -> int:
    """The whole factor that brings the longest side to MAX_SIDE or less."""
    return max(1, math.ceil(max(width, height) / MAX_SIDE))


def open_header(data: bytes, formats) -> Image.Image:
    """Pillow's view of the file from its header alone; refuses what Pillow calls a bomb."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"The image claims more than {MAX_PIXELS // 1_000_000} megapixels and was "
                             "refused.") from None
        except MemoryError:
            raise
        except Exception:  # UnidentifiedImageError, SyntaxError, struct errors of a broken header
            raise InputError(f"This file is not an image that can be read. Please upload a {SUPPORTED} "
                             "file.") from None
    return image


def decode_frame(image: Image.Image, data: bytes) -> None:
    """Decode the first frame now (truncation shows here), JPEGs at a reduced scale."""
    if image.format in ("JPEG", "MPO"):
        check_jpeg_scans(data)
        width, height = image.size
        factor = reduction_factor(width, height)
        if factor > 1:
            image.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("The image is larger than it claims and was refused.") from None
    except MemoryError:
        raise  # decode() says so; it is not damage
    except Exception:
        raise InputError("The image file is truncated or corrupt; please upload it again.") from None


def check_jpeg_scans(data: bytes) -> None:
    """Refuse JPEGs with very many scans before decoding: each progressive
    scan passes over the whole image (2000 scans: over 20 s of CPU). Entropy-
    coded data escape 0xFF as FF 00, so FF DA is only ever a start-of-scan."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise InputError(f"This JPEG is stored in {scans} passes (scans), more than the {MAX_JPEG_SCANS} "
                         "accepted. Please save it again as an ordinary JPEG or PNG.")


def finite_range(values: np.ndarray) -> tuple[float, float]:
    """The darkest and brightest finite value; (inf, -inf) when there is none."""
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return math.inf, -math.inf
    return float(values.min()), float(values.max())


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Shrink a 2-D (or 2-D x channels) array by `factor` (box filter) to float32;
    rows and columns beyond the last whole block are dropped."""
    if factor == 1:
        return values.astype(np.float32)
    height, width = values.shape[0] // factor * factor, values.shape[1] // factor * factor
    blocks = values[:height, :width].reshape(height // factor, factor, width // factor, factor, *values.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map low to 0 and high to 255 linearly; NaN and -inf to 0, +inf to 255."""
    if not high > low:  # flat, or no finite pixel at all
        return np.where(values == np.inf, 255, 0).astype(np.uint8)
    values = np.nan_to_num(values.astype(np.float32, copy=False), nan=low, posinf=high, neginf=low)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the darkest finite value to 0 and the brightest to 255, linearly (float32)."""
    return to_uint8(values, *finite_range(values))
