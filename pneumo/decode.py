"""Turns an uploaded file into a PIL image, safely.

    decode(path_or_bytes) -> Decoded(image, warnings, kind)

Accepted: JPEG, PNG, BMP, TIFF, WebP (8- or 16-bit, greyscale, palette or
colour, with or without alpha) and DICOM. The image comes back in mode "L"
or "RGB" with its EXIF rotation applied. Anything else raises InputError
with a message meant for the person who uploaded the file.

Limits (a file outside them is refused):

    MAX_FILE_BYTES = 32 MB          larger files are not read at all
    MAX_PIXELS     = 50 megapixels  width x height, checked from the header
                                    before any decoding (decompression bombs)
    MIN_SIDE       = 64 pixels      smaller images hold too little detail

How pixels are converted:

- 16-bit and 32-bit images are stretched to 8 bits by their own darkest and
  brightest pixel (the model standardises contrast per image anyway).
- Transparent areas are composited on black, the usual X-ray background.
- DICOM: the modality LUT (rescale slope/intercept) then the VOI LUT or
  window are applied, the result is stretched to 8 bits (8-bit data without
  any LUT are kept as they are), and MONOCHROME1 is inverted so that bone is
  white. Compressed DICOM decodes when a pydicom decoder for its transfer
  syntax is installed (Pillow covers JPEG Baseline and JPEG 2000; pydicom
  itself RLE and Deflate); otherwise the error names the transfer syntax.
  Patient data are never read into warnings or errors.
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 50_000_000
MIN_SIDE = 64

# Only these Pillow decoders are tried: fewer parsers exposed to uploads, and
# none that shells out (EPS runs Ghostscript). "JPEG" also opens the MPO
# files of many cameras and phones.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
SUPPORTED = "JPEG, PNG, BMP, TIFF, WebP or DICOM"
DICOM_SUFFIXES = {".dcm", ".dicom"}


class InputError(ValueError):
    """The upload cannot be used; the message says why, for the uploader."""


@dataclass
class Decoded:
    image: Image.Image  # mode "L" or "RGB"
    warnings: list[str] = field(default_factory=list)
    kind: str = "image"  # "image" or "dicom"


def decode(source) -> Decoded:
    """A path (str or Path) or the file's bytes -> Decoded; raises InputError."""
    data, suffix = _read(source)
    if data[128:132] == b"DICM" or suffix in DICOM_SUFFIXES:
        image, warnings = _decode_dicom(data)
        kind = "dicom"
    else:
        image, warnings = _decode_image(data)
        kind = "image"
    return Decoded(image, warnings, kind)


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
    refused_bomb = InputError(f"The image claims more than {MAX_PIXELS // 1_000_000} megapixels and was refused.")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise refused_bomb from None
    except (OSError, SyntaxError, ValueError, EOFError):  # UnidentifiedImageError is an OSError
        raise InputError(f"This file is not an image that can be read. Please upload a {SUPPORTED} file.") from None
    # Opening read only the header: refuse bombs and tiny images before decoding.
    check_size(*image.size)
    warnings = []
    try:
        if getattr(image, "n_frames", 1) > 1:
            warnings.append(f"The file holds {image.n_frames} images; only the first was used.")
            image.seek(0)
        image.load()  # force the full decode now, so truncation shows here
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InputError("The image file is truncated or corrupt; please upload it again.") from None
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block should not cost the picture
        warnings.append("The photo's orientation tag could not be read; the image is shown as stored.")
    return _to_l_or_rgb(image, warnings), warnings


def _to_l_or_rgb(image: Image.Image, warnings: list[str]) -> Image.Image:
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        return _drop_alpha(image, "RGB", warnings) if has_alpha else image
    if mode in ("LA", "La"):
        return _drop_alpha(image.convert("RGBA"), "L", warnings)
    if mode in ("RGBA", "RGBa"):
        return _drop_alpha(image.convert("RGBA"), "RGB", warnings)
    if mode.startswith(("I", "F")):  # 16-bit (I;16*), 32-bit int or float
        return Image.fromarray(stretch_to_uint8(np.asarray(image)))
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _drop_alpha(rgba: Image.Image, mode: str, warnings: list[str]) -> Image.Image:
    """Composite on black: transparent borders of an X-ray are background."""
    if rgba.getchannel("A").getextrema()[0] < 255:
        warnings.append("Transparent areas of the image were filled with black.")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert(mode)


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the darkest value to 0 and the brightest to 255, linearly."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


# --- DICOM -----------------------------------------------------------------


def _decode_dicom(data: bytes) -> tuple[Image.Image, list[str]]:
    # pydicom is imported here so that plain images never pay for it.
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    # No exception text is passed on: pydicom's could quote element values,
    # and those may identify the patient.
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        raise InputError("This DICOM file cannot be read; it may be damaged.") from None
    if "PixelData" not in ds:
        raise InputError("This DICOM file holds no image (it has no pixel data).")
    try:
        check_size(int(ds.Columns), int(ds.Rows))
    except (AttributeError, TypeError, ValueError):
        raise InputError("This DICOM file does not say how large its image is.") from None
    warnings = []
    try:
        pixels = ds.pixel_array
    except Exception:
        raise InputError(_undecodable(ds)) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        warnings.append(f"The DICOM file holds {frames} images; only the first was used.")
        pixels = pixels[0]
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        try:
            pixels = apply_color_lut(pixels, ds)
        except Exception:
            raise InputError("This DICOM file's colour palette is invalid.") from None
    if pixels.ndim == 3:
        # Colour (pydicom already turned YBR into RGB): rare for X-rays.
        rgb = pixels if pixels.dtype == np.uint8 else stretch_to_uint8(pixels)
        return Image.fromarray(rgb), warnings
    try:
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds, index=0)
    except Exception:
        raise InputError("This DICOM file's grey-level tables (modality or VOI LUT) are invalid.") from None
    untouched = values.dtype == pixels.dtype and np.array_equal(values, pixels)
    if untouched and pixels.dtype == np.uint8:
        grey = pixels  # 8-bit data with no LUT: keep the pixels as stored
    else:
        grey = stretch_to_uint8(values)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1 shows low values white: make bone white
    return Image.fromarray(np.ascontiguousarray(grey)), warnings


def _undecodable(ds) -> str:
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        return (
            f"This DICOM image is compressed as {syntax.name} ({syntax}), which this server cannot "
            "decode. Please export it uncompressed or as PNG/JPEG."
        )
    return "The image data in this DICOM file are damaged or incomplete."
