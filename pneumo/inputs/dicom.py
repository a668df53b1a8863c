"""DICOM files -> the first frame as an 8-bit image, checked at every step.

    decode_dicom(data) -> (PIL image "L" or "RGB", warnings)

Called by pneumo.inputs.decode (see its docstring for the conversions). The order
of the checks is the point of this module:

1. Deflated files are inflated with a cap (pydicom has none).
2. The header (rows, columns, frames, samples, bits) is checked before any
   pixel work; uncompressed data must hold the frame the header promises.
3. Only the first frame is decoded: for JPEG and JPEG 2000 this module cuts
   that frame out of the encapsulated data itself and opens it with Pillow,
   refusing it when the embedded image's own header disagrees with the DICOM
   header (a "64 x 64" DICOM holding a 13000 x 13000 JPEG); pydicom decodes
   the others (native, RLE) with `index=0`.
4. Frames larger than MAX_SIDE are shrunk before the LUTs, so the float
   copies that the LUTs make stay small.

No exception text from pydicom is ever passed on (it may quote patient data),
and pydicom's warnings and log lines are silenced (quiet_pydicom).
"""

import io
import logging
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pneumo.inputs.pixels import (MAX_INFLATED_BYTES, InputError, block_mean, check_size, decode_frame, open_header,
                     reduction_factor, stretch_to_uint8)

PILLOW_FORMATS = {"1.2.840.10008.1.2.4.50": ("JPEG",),  # JPEG Baseline (8-bit)
                  "1.2.840.10008.1.2.4.51": ("JPEG",),  # JPEG Extended (Pillow: 8-bit only)
                  "1.2.840.10008.1.2.4.90": ("JPEG2000",),  # JPEG 2000 Lossless
                  "1.2.840.10008.1.2.4.91": ("JPEG2000",)}  # JPEG 2000
DAMAGED = "The image data in this DICOM file are damaged or incomplete."
# Value representations of explicit-VR DICOM: the two letters after a file's first tag.
VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR "
                b"US UT UV".split())


@dataclass
class Header:
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int

    @property
    def frame_bytes(self) -> int:
        return (self.rows * self.columns * self.samples * self.bits_allocated + 7) // 8


def looks_like_dicom(data: bytes) -> bool:
    """DICOM by content, whatever the file is called: the "DICM" mark after the
    128-byte preamble, or (files written without preamble and meta header, which
    pydicom still reads) a first element of group 0002 or 0008, little endian,
    with a known VR or, in implicit VR, a short length."""
    if data[128:132] == b"DICM":
        return True
    if len(data) < 8 or int.from_bytes(data[0:2], "little") not in (0x0002, 0x0008):
        return False
    return data[4:6] in VRS or int.from_bytes(data[4:8], "little") < 1024


def decode_dicom(data: bytes) -> tuple[Image.Image, list[str]]:
    ds = read_dicom(data)
    if "PixelData" not in ds:
        raise InputError("This DICOM file holds no image (it has no pixel data).")
    header = read_header(ds)
    notes = [f"The DICOM file holds {header.frames} images; only the first was used."] if header.frames > 1 else []
    pixels = first_frame(ds, header)
    return Image.fromarray(np.ascontiguousarray(to_grey_or_rgb(pixels, ds))), notes


def quiet_pydicom() -> None:
    """pydicom's validation warnings and log lines can quote header values
    (a patient's name in a malformed field): none of them may reach the logs."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logger = logging.getLogger("pydicom")
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def read_dicom(data: bytes):
    """The dataset, its pixel data still encoded."""
    import pydicom

    quiet_pydicom()
    try:
        return _with_transfer_syntax(pydicom.dcmread(io.BytesIO(_inflated(data)), force=True))
    except (InputError, MemoryError):
        raise
    except Exception:
        raise InputError("This DICOM file cannot be read; it may be damaged.") from None


def _with_transfer_syntax(ds):
    """A data set written without its meta header names no transfer syntax, which
    pixel decoding needs: take the encoding pydicom found it in (uncompressed)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _inflated(data: bytes) -> bytes:
    """A Deflated Explicit VR Little Endian file -> the same file, uncompressed
    (at most MAX_INFLATED_BYTES: pydicom inflated a 1.5 MB file to 4.5 GB)."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filereader import _read_file_meta_info, read_preamble  # pydicom 3.0 (pinned)
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    stream = io.BytesIO(data)
    read_preamble(stream, True)
    meta = _read_file_meta_info(stream)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return data
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body = inflater.decompress(data[stream.tell():], MAX_INFLATED_BYTES + 1)
    if len(body) > MAX_INFLATED_BYTES:
        raise InputError(f"This DICOM file's compressed data expand to more than "
                         f"{MAX_INFLATED_BYTES // (1024 * 1024)} MB; it was refused.")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
    out.write(body)
    return out.getvalue()


def read_header(ds) -> Header:
    """The image geometry, checked against the limits before any pixel work."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError("This DICOM file does not say how large its image is.") from None
    check_size(columns, rows)
    try:
        header = Header(rows, columns, int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1)),
                        int(ds.get("BitsAllocated", 8)))
    except (TypeError, ValueError):
        raise InputError("This DICOM file's image description (frames, samples or bits) is invalid.") from None
    if header.frames < 1 or header.samples not in (1, 3) or header.bits_allocated not in (1, 8, 16, 32):
        raise InputError("This DICOM file's pixel format is not one this server can read "
                         "(1 or 3 samples of 1, 8, 16 or 32 bits).")
    return header


def first_frame(ds, header: Header) -> np.ndarray:
    syntax = _syntax(ds)
    if syntax is not None and syntax.is_encapsulated:
        if syntax in PILLOW_FORMATS:
            return _pillow_frame(ds, header, PILLOW_FORMATS[syntax])
    elif len(ds.PixelData) < header.frame_bytes:
        raise InputError(DAMAGED)
    return _pydicom_frame(ds)


def _syntax(ds):
    return getattr(ds, "file_meta", {}).get("TransferSyntaxUID")


def _pydicom_frame(ds) -> np.ndarray:
    try:
        ds.pixel_array_options(index=0)  # decode the first frame only
        return ds.pixel_array
    except MemoryError:
        raise
    except Exception:
        raise InputError(_undecodable(ds)) from None


def _pillow_frame(ds, header: Header, formats) -> np.ndarray:
    """Cut the first frame out of the encapsulated data and decode it with
    Pillow, after its own header agrees with the DICOM header."""
    from pydicom.encaps import get_frame

    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frame = get_frame(ds.PixelData, 0, extended_offsets=offsets, number_of_frames=header.frames)
    except Exception:
        raise InputError(DAMAGED) from None
    try:
        image = open_header(frame, formats)
    except InputError as error:
        raise InputError(str(error) if "megapixels" in str(error) else DAMAGED) from None
    if image.size != (header.columns, header.rows):
        raise InputError(f"The compressed image inside this DICOM file is {image.size[0]} x {image.size[1]} "
                         f"pixels, but the file's header says {header.columns} x {header.rows}; the file "
                         "was refused as inconsistent.")
    decode_frame(image, frame)
    return np.asarray(image)


def to_grey_or_rgb(pixels: np.ndarray, ds) -> np.ndarray:
    """A decoded frame -> uint8 grey (LUTs applied, bone white) or RGB, shrunk to MAX_SIDE."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = ds.get("PhotometricInterpretation")
    if photometric == "PALETTE COLOR":
        try:
            pixels = apply_color_lut(pixels, ds)  # before shrinking: averaged indices mean nothing
        except Exception:
            raise InputError("This DICOM file's colour palette is invalid.") from None
    pixels = _shrunk(pixels)
    if pixels.ndim == 3:
        # Colour (pydicom and Pillow already give RGB): rare for X-rays.
        return pixels if pixels.dtype == np.uint8 else stretch_to_uint8(pixels)
    try:
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds, index=0)
    except Exception:
        raise InputError("This DICOM file's grey-level tables (modality or VOI LUT) are invalid.") from None
    untouched = values.dtype == pixels.dtype and np.array_equal(values, pixels)
    if untouched and pixels.dtype == np.uint8:
        grey = pixels  # 8-bit data with no LUT: keep the pixels as stored
    else:
        grey = stretch_to_uint8(values)
    if photometric == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1 shows low values white: make bone white
    return grey


def _shrunk(pixels: np.ndarray) -> np.ndarray:
    """Box-shrink to MAX_SIDE, keeping the dtype so that pydicom's LUTs apply as to stored values."""
    factor = reduction_factor(pixels.shape[1], pixels.shape[0])
    if factor == 1:
        return pixels
    mean = block_mean(pixels, factor)
    if pixels.dtype.kind in "iu":
        mean = np.round(mean)
    return mean.astype(pixels.dtype)


def _undecodable(ds) -> str:
    syntax = _syntax(ds)
    if syntax is not None and syntax.is_compressed:
        return (
            f"This DICOM image is compressed as {syntax.name} ({syntax}), which this server cannot "
            "decode. Please export it uncompressed or as PNG/JPEG."
        )
    return DAMAGED
