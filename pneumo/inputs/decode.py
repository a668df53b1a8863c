"""Turns an uploaded file into a PIL image, safely.

    decode(path_or_bytes) -> Decoded(image, warnings, kind)

Accepted: JPEG, PNG, BMP, TIFF, WebP, GIF (8- or 16-bit or float, greyscale,
palette or colour, with or without alpha) and DICOM, each recognised by its
content (pneumo.inputs.dicom.looks_like_dicom), not its name. The image comes back in
mode "L" or "RGB" with its EXIF rotation applied. Anything else raises
InputError with a message meant for the person who uploaded the file; no
exception of any other kind leaves decode().

The app runs decode() in a sandboxed worker process (pneumo/inputs/sandbox.py);
the checks here are the cheap first line: they refuse most hostile files
before any pixel is decoded, and keep honest large files within memory.

Limits (a file outside them is refused):

    MAX_FILE_BYTES     = 32 MB          larger files are not read at all
    MAX_PIXELS         = 50 megapixels  width x height, checked from the header
                                        before any decoding (decompression bombs)
    MIN_SIDE           = 64 pixels      smaller images hold too little detail
    MAX_ASPECT_RATIO   = 16             a longer strip is no chest X-ray (and would
                                        shrink to nothing on its short side)
    MAX_JPEG_SCANS     = 64             progressive JPEGs with more scans (each
                                        one re-reads the whole image) are refused
    MAX_INFLATED_BYTES = 99 MB          a deflated DICOM may expand to this much

Size of the result: images whose longest side exceeds MAX_SIDE (2048 px)
are shrunk by a whole factor (box filter; JPEGs are decoded at 1/2, 1/4 or
1/8 scale straight away), so the result is at most 2048 x 2048. The model
sees 128 x 128 px, so nothing it uses is lost, and no caller ever holds a
50-megapixel array. Only the first image of a multi-image file (GIF, TIFF,
WebP, DICOM) is decoded.

How pixels are converted:

- 16-bit, 32-bit and float images are stretched to 8 bits by their own
  darkest and brightest pixel (the model standardises contrast per image
  anyway); NaN and infinite pixels are left out of that range and shown
  as the darkest (NaN, -inf) or brightest (+inf) value.
- Transparent areas are composited on black, the usual X-ray background.
- DICOM: the header (rows, columns, frames, bits) is checked before any
  pixel work; the modality LUT (rescale slope/intercept) then the VOI LUT
  or window are applied, the result is stretched to 8 bits (8-bit data
  without any LUT are kept as they are), and MONOCHROME1 is inverted so
  that bone is white. JPEG and JPEG 2000 frames are decoded here with
  Pillow, after checking that the embedded image's own header agrees with
  the DICOM header; RLE and Deflate by pydicom; other compressed transfer
  syntaxes are refused with their name. Patient data are never read into
  warnings or errors, and pydicom never writes to the log.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.inputs.dicom import decode_dicom, looks_like_dicom
# The limits and helpers both decoders share; re-exported, as callers import them from here.
from pneumo.inputs.pixels import (MAX_ASPECT_RATIO, MAX_INFLATED_BYTES, MAX_JPEG_SCANS, MAX_PIXELS, MAX_SIDE,  # noqa: F401
                     MIN_SIDE, SUPPORTED, InputError, block_mean, check_jpeg_scans, check_size, decode_frame,
                     finite_range, open_header, reduction_factor, stretch_to_uint8, to_uint8)

MAX_FILE_BYTES = 32 * 1024 * 1024

# Only these Pillow decoders are tried: fewer parsers exposed to uploads, and
# none that shells out (EPS runs Ghostscript). "JPEG" also opens the MPO
# files of many cameras and phones.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
DICOM_SUFFIXES = {".dcm", ".dicom"}
PIXELS_PER_BAND = 4_000_000  # high-bit-depth images are converted this many pixels at a time

# EXIF orientation -> the transpose that shows the picture upright.
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


TOO_LARGE_TO_DECODE = "This file needs more memory to decode than this server allows, so it was refused."


@dataclass
class Decoded:
    image: Image.Image  # mode "L" or "RGB", longest side at most MAX_SIDE
    warnings: list[str] = field(default_factory=list)
    kind: str = "image"  # "image" or "dicom"


def decode(source) -> Decoded:
    """A path (str or Path) or the file's bytes -> Decoded; raises InputError only."""
    data, suffix = _read(source)
    try:
        if looks_like_dicom(data) or suffix in DICOM_SUFFIXES:  # by content: a temporary file has no suffix
            image, notes = decode_dicom(data)
            return Decoded(image, notes, "dicom")
        image, notes = _decode_image(data)
        return Decoded(image, notes, "image")
    except InputError:
        raise
    except MemoryError:
        raise InputError(TOO_LARGE_TO_DECODE) from None
    except Exception:  # a decoder's own error text may quote the file: never pass it on
        raise InputError(f"This file could not be decoded; it may be damaged. Please upload a {SUPPORTED} "
                         "file.") from None


def _read(source) -> tuple[bytes, str]:
    """The file's bytes and lower-case suffix ("" for bytes), size-checked."""
    too_large = InputError(f"The file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MB accepted.")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, suffix = bytes(source), ""
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        try:
            if not path.is_file():
                raise InputError(f"{path.name} is not a file." if path.exists() else f"File not found: {path.name}")
            # Check the size first so that a huge file never reaches memory.
            if path.stat().st_size > MAX_FILE_BYTES:
                raise too_large
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"{path.name} cannot be read ({err.strerror or 'I/O error'}).") from None
    if not data:
        raise InputError("The file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise too_large
    return data, suffix


# --- ordinary images -------------------------------------------------------


def _decode_image(data: bytes) -> tuple[Image.Image, list[str]]:
    image = open_image(data, IMAGE_FORMATS)
    notes = []
    if getattr(image, "is_animated", False):
        # is_animated looks for a second frame only; n_frames would walk all
        # of them (a TIFF can chain 60,000 image directories).
        notes.append("The file holds several images; only the first was used.")
    orientation = _orientation(image, notes)
    decode_frame(image, data)
    image = _to_l_or_rgb(image, notes)
    if orientation in ORIENTATIONS:
        image = image.transpose(ORIENTATIONS[orientation])
    return image, notes


def open_image(data: bytes, formats) -> Image.Image:
    """Read the header only, and refuse bombs and tiny images before any decoding."""
    image = open_header(data, formats)
    check_size(*image.size)
    return image


def _orientation(image: Image.Image, notes: list[str]) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a damaged EXIF block should not cost the picture
        notes.append("The photo's orientation tag could not be read; the image is shown as stored.")
        return None


def _to_l_or_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Any decoded mode -> "L" or "RGB", shrunk to MAX_SIDE on the way."""
    if image.mode.startswith(("I", "F")):  # 16-bit (I;16*), 32-bit int or float
        return Image.fromarray(_stretch_bands(image))
    mode = image.mode
    image = _shrink(_reducible(image))
    if image.mode == "RGBA":
        return _drop_alpha(image, "L" if mode in ("LA", "La") else "RGB", notes)
    if image.mode == "LA":
        return _drop_alpha(image.convert("RGBA"), "L", notes)
    return image


def _reducible(image: Image.Image) -> Image.Image:
    """A mode that Image.reduce accepts and that loses nothing of the picture."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA", "LA"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in ("La", "RGBa"):
        return image.convert("RGBA")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _shrink(image: Image.Image) -> Image.Image:
    factor = reduction_factor(*image.size)
    return image.reduce(factor) if factor > 1 else image


def _drop_alpha(rgba: Image.Image, mode: str, notes: list[str]) -> Image.Image:
    """Composite on black: transparent borders of an X-ray are background."""
    if rgba.getchannel("A").getextrema()[0] < 255:
        notes.append("Transparent areas of the image were filled with black.")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert(mode)


# --- high bit depth -----------------------------------------------------------


def _stretch_bands(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float image -> stretched, shrunk uint8, a band of
    rows at a time: a 50-megapixel float image never exists as a second full
    copy (the old whole-array float64 path peaked at 1.3 GB)."""
    width, height = image.size
    factor = reduction_factor(width, height)
    rows = max(factor, PIXELS_PER_BAND // width // factor * factor)
    bands = [(top, min(top + rows, height)) for top in range(0, height, rows)]
    low, high = math.inf, -math.inf
    for top, bottom in bands:
        band_low, band_high = finite_range(np.asarray(image.crop((0, top, width, bottom))))
        low, high = min(low, band_low), max(high, band_high)
    out = [to_uint8(block_mean(np.asarray(image.crop((0, top, width, bottom))), factor), low, high)
           for top, bottom in bands if bottom - top >= factor]
    return np.concatenate(out)


