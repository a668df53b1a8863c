"""Hostile and odd-but-honest uploads, built on the spot (no such binaries are committed).

    build_corpus(folder) -> {name: Case(path, refusal)}

`refusal` is a phrase the app's error must contain, or None when the file
is honest and must get an answer (a verdict or a scope note, not an error).
Used by tests/test_hostile.py and benchmarks/hostile.py.
"""

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Case:
    path: Path
    refusal: str | None  # None: honest, must be answered


def xray_like(width, height, dtype=np.uint8, seed=0) -> np.ndarray:
    """A chest film (examples/child-normal.jpeg) stretched to width x height: smooth, so files stay small
    at 50 MP, and a chest whose lungs and heart the anatomy check finds. `seed` dims it a little."""
    with Image.open(Path(__file__).resolve().parents[1] / "examples" / "child-normal.jpeg") as film:
        grey = np.asarray(film.convert("L").resize((width, height), Image.Resampling.BILINEAR), np.float32) / 255
    grey = grey * (1 - 0.02 * (seed % 10))
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return (np.clip(grey, 0, 1) * top).astype(dtype)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- DICOM --------------------------------------------------------------------


def dicom_dataset(rows, columns, *, syntax, bits=8, frames=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.Modality = "Doe^Jane", "DX"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    if frames:
        ds.NumberOfFrames = frames
    return ds


def saved(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def deflate_bomb(inflated_gb=3) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM of about 4 MB whose body inflates to
    `inflated_gb` GB of zeros. Built in milliseconds: after a full flush the
    compressor forgets its history, so one compressed block can be repeated."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    ds = dicom_dataset(4096, 4096, syntax=ExplicitVRLittleEndian, bits=16)
    ds.PixelData = b"\0" * 16
    plain = saved(ds)
    head = plain[:plain.index(b"\xe0\x7f\x10\x00")]  # up to (7FE0,0010) Pixel Data
    meta_len = _meta_end(head)
    block = 16 << 20
    blocks = (inflated_gb << 30) // block
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = compressor.compress(head[meta_len:] + b"\xe0\x7f\x10\x00OB\0\0" + struct.pack("<I", blocks * block))
    start += compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    syntax_element = b"\x02\x00\x10\x00UI"
    meta = head[:meta_len].replace(syntax_element + struct.pack("<H", 20) + ExplicitVRLittleEndian.encode() + b"\0",
                                   syntax_element + struct.pack("<H", 22) + DeflatedExplicitVRLittleEndian.encode())
    return _fix_meta_length(meta) + start + zeros * blocks + end


def _meta_end(data: bytes) -> int:
    (group_length,) = struct.unpack("<I", data[140:144])
    return 144 + group_length


def _fix_meta_length(meta: bytes) -> bytes:
    return meta[:140] + struct.pack("<I", len(meta) - 144) + meta[144:]


def frame_table_dicom(frames=4000) -> bytes:
    """JPEG-in-DICOM whose frame table points `frames` times at one JPEG fragment."""
    from pydicom.uid import JPEGBaseline8Bit

    jpeg = encode(Image.fromarray(xray_like(512, 512)), "JPEG", quality=90)
    jpeg += b"\0" * (len(jpeg) % 2)
    ds = dicom_dataset(512, 512, syntax=JPEGBaseline8Bit, frames=frames)
    offsets = struct.pack(f"<{frames}I", *([0] * frames))
    item = b"\xfe\xff\x00\xe0"
    ds.PixelData = (item + struct.pack("<I", len(offsets)) + offsets + item + struct.pack("<I", len(jpeg)) + jpeg
                    + b"\xfe\xff\xdd\xe0\0\0\0\0")
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return saved(ds)


def lying_jpeg_dicom(real_side=13000) -> bytes:
    """A DICOM saying 64 x 64 whose JPEG says `real_side` x `real_side` (SOF patched: no big encode)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    jpeg = bytearray(encode(Image.fromarray(xray_like(64, 64)), "JPEG", quality=90))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", real_side, real_side)
    ds = dicom_dataset(64, 64, syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([bytes(jpeg)])
    ds["PixelData"].VR = "OB"
    return saved(ds)


def element_flood_dicom(elements=2_600_000) -> bytes:
    """A valid 128 x 128 DICOM padded with `elements` tiny private elements (31 MB):
    it passes every cheap check, yet parsing it costs pydicom seconds and gigabytes.
    It stands for whatever slow file the checks do not know: the sandbox stops it."""
    from pydicom.uid import ExplicitVRLittleEndian

    ds = dicom_dataset(128, 128, syntax=ExplicitVRLittleEndian)
    ds.PixelData = xray_like(128, 128).tobytes()
    plain = saved(ds)
    meta_end = _meta_end(plain)
    flood = np.zeros(elements, dtype=[("group", "<u2"), ("element", "<u2"), ("vr", "S2"), ("length", "<u2"),
                                       ("value", "<u4")])
    index = np.arange(elements)
    flood["group"] = 0x0009 + 2 * (index // 0xE000)  # private groups, before (0008,...) is fine for pydicom
    flood["element"] = 0x1000 + index % 0xE000
    flood["vr"], flood["length"], flood["value"] = b"UL", 4, index
    return plain[:meta_end] + flood.tobytes() + plain[meta_end:]


# --- ordinary formats -----------------------------------------------------------


def many_scans_jpeg(repeats=2000) -> bytes:
    """A progressive JPEG whose last scan is repeated `repeats` times."""
    data = encode(Image.fromarray(xray_like(256, 256)), "JPEG", progressive=True, quality=80)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]
    return data[:last] + scan * repeats + b"\xff\xd9"


def many_ifds_tiff(count=60_000, side=128) -> bytes:
    """A TIFF chaining `count` image directories, all showing one small X-ray."""
    pixels = xray_like(side, side).tobytes()
    entries = [(256, 3, side), (257, 3, side), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
               (278, 3, side), (279, 4, len(pixels))]
    ifd_size = 2 + 12 * len(entries) + 4
    first = 8 + len(pixels)
    out = [b"II*\0" + struct.pack("<I", first), pixels]
    for index in range(count):
        following = first + (index + 1) * ifd_size if index + 1 < count else 0
        body = struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            body += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                          else struct.pack("<I", value))
        out.append(body + struct.pack("<I", following))
    return b"".join(out)


def limit_png_16bit(megapixels=49) -> bytes:
    side = int((megapixels * 1_000_000) ** 0.5)
    return encode(Image.fromarray(xray_like(side, side, np.uint16)), "PNG", compress_level=1)


def limit_float_tiff(megapixels=49) -> bytes:
    """Float32 at the limit; whole-number values, so that deflate keeps the file small."""
    side = int((megapixels * 1_000_000) ** 0.5)
    pixels = xray_like(side, side).astype(np.float32) * 4.0
    return encode(Image.fromarray(pixels), "TIFF", compression="tiff_adobe_deflate")


def nan_float_tiff() -> bytes:
    pixels = xray_like(512, 400, np.float32) * 1000
    pixels[10:20, 10:20] = np.nan
    pixels[30, 30], pixels[31, 31] = np.inf, -np.inf
    return encode(Image.fromarray(pixels), "TIFF")


def gif(frames=1) -> bytes:
    images = [Image.fromarray(xray_like(300, 256, seed=seed)) for seed in range(frames)]
    return encode(images[0], "GIF", save_all=frames > 1, append_images=images[1:], duration=100)


# name -> (builder, refusal phrase or None)
CORPUS = {
    "deflate-bomb.dcm": (deflate_bomb, "expand to more than"),
    "frame-table.dcm": (frame_table_dicom, "damaged or incomplete"),
    "jpeg-13000px-in-64px.dcm": (lying_jpeg_dicom, "megapixels"),
    "jpeg-4000px-in-64px.dcm": (lambda: lying_jpeg_dicom(4000), "header says 64 x 64"),
    "2.6m-elements.dcm": (element_flood_dicom, "than this server allows"),
    "progressive-2000-scans.jpeg": (many_scans_jpeg, "scans"),
    "60000-ifds.tiff": (many_ifds_tiff, None),
    "49mp-16bit.png": (limit_png_16bit, None),
    "49mp-float.tiff": (limit_float_tiff, None),
    "nan-float.tiff": (nan_float_tiff, None),
    "xray.gif": (gif, None),
    "animated.gif": (lambda: gif(3), None),
}
HOSTILE = ("deflate-bomb.dcm", "frame-table.dcm", "jpeg-13000px-in-64px.dcm", "jpeg-4000px-in-64px.dcm",
           "2.6m-elements.dcm", "progressive-2000-scans.jpeg", "60000-ifds.tiff")


def build_corpus(folder: Path) -> dict[str, Case]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    for name, (builder, refusal) in CORPUS.items():
        path = folder / name
        path.write_bytes(builder())
        cases[name] = Case(path, refusal)
    return cases
