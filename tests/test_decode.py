"""pneumo.inputs.decode: every accepted format, every refusal, and DICOM."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.inputs.decode import MAX_FILE_BYTES, MAX_SIDE, MIN_SIDE, InputError, decode, stretch_to_uint8

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "SECRET-ID-4242"


def synthetic_xray(width=160, height=128) -> np.ndarray:
    """A dark, lung-like uint8 picture with bright 'ribs' and a full grey range."""
    y, x = np.mgrid[0:height, 0:width]
    body = 60 + 120 * np.exp(-(((x - width / 2) / (width / 2.5)) ** 2))
    ribs = 50 * (np.sin(y / 5.0) > 0.6)
    pixels = np.clip(body + ribs + (x * 3 + y * 5) % 23, 0, 255)
    pixels[0, 0], pixels[-1, -1] = 0, 255
    return pixels.astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def grey(decoded) -> np.ndarray:
    return np.asarray(decoded.image.convert("L"), dtype=np.int16)


@pytest.fixture(scope="module")
def real_path(shared_data) -> Path:
    """A real training X-ray (the conftest fixture skips without shared/, fails on CI)."""
    return sorted((shared_data / "train" / "NORMAL").iterdir())[0]


@pytest.fixture(scope="module")
def real_xray(real_path) -> np.ndarray:
    """The real X-ray as uint8 greyscale."""
    with Image.open(real_path) as image:
        return np.asarray(image.convert("L"))


# --- accepted formats --------------------------------------------------------


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_keep_the_pixels(fmt, options):
    pixels = synthetic_xray()
    decoded = decode(encode(Image.fromarray(pixels), fmt, **options))
    assert decoded.kind == "image"
    assert decoded.image.mode in ("L", "RGB")
    assert decoded.image.size == (160, 128)
    np.testing.assert_array_equal(grey(decoded), pixels)
    assert decoded.warnings == []


def test_jpeg_from_path_and_bytes(tmp_path):
    pixels = synthetic_xray()
    path = tmp_path / "xray.jpeg"
    Image.fromarray(pixels).save(path, quality=95)
    from_path, from_bytes = decode(path), decode(path.read_bytes())
    assert np.abs(grey(from_path) - pixels).mean() < 3
    np.testing.assert_array_equal(grey(from_path), grey(from_bytes))
    assert decode(str(path)).image.size == (160, 128)


def test_real_jpeg(real_path, real_xray):
    decoded = decode(real_path)
    np.testing.assert_array_equal(grey(decoded), real_xray)
    assert decoded.warnings == []  # a grey X-ray stored as RGB is not "colour"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_is_stretched_by_its_range(fmt):
    pixels = synthetic_xray()
    wide = pixels.astype(np.uint16) * 40 + 3000  # uses 3000..13200 of 0..65535
    decoded = decode(encode(Image.fromarray(wide), fmt))
    assert decoded.image.mode == "L"
    np.testing.assert_array_equal(grey(decoded), pixels)  # the range maps back to 0..255


def test_big_endian_16_bit_tiff():
    pixels = synthetic_xray()
    wide = (pixels.astype(np.uint16) * 257).astype(">u2")
    image = Image.fromarray(wide)
    assert image.mode == "I;16B"
    np.testing.assert_array_equal(grey(decode(encode(image, "TIFF"))), pixels)


def test_palette_png():
    pixels = synthetic_xray()
    palette = Image.fromarray(pixels).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    decoded = decode(encode(palette, "PNG"))
    assert decoded.image.mode in ("L", "RGB")
    assert np.abs(grey(decoded) - pixels).max() <= 8
    assert decoded.warnings == []


def test_rgba_transparent_areas_become_black():
    pixels = synthetic_xray()
    alpha = np.full(pixels.shape, 255, np.uint8)
    alpha[:, :20] = 0
    rgba = Image.merge("RGBA", [Image.fromarray(pixels)] * 3 + [Image.fromarray(alpha)])
    decoded = decode(encode(rgba, "PNG"))
    assert decoded.image.mode == "RGB"
    assert (grey(decoded)[:, :20] == 0).all()
    np.testing.assert_array_equal(grey(decoded)[:, 20:], pixels[:, 20:])
    assert any("Transparent" in w for w in decoded.warnings)


def test_opaque_la_png_drops_alpha_silently():
    pixels = synthetic_xray()
    la = Image.merge("LA", [Image.fromarray(pixels), Image.new("L", (160, 128), 255)])
    decoded = decode(encode(la, "PNG"))
    assert decoded.image.mode == "L"
    np.testing.assert_array_equal(grey(decoded), pixels)
    assert decoded.warnings == []


def test_exif_orientation_6_rotates_the_image():
    pixels = np.zeros((128, 160), np.uint8)
    pixels[:40, :40] = 255  # a bright top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    decoded = decode(encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95))
    shown = grey(decoded)
    assert decoded.image.size == (128, 160)  # width and height swapped
    assert shown[:40, -40:].mean() > 200  # the corner is now top-right
    assert shown[:40, :40].mean() < 50


def test_colour_stays_colour_for_the_scope_check():
    # Whether colour means "a photo of a film" or "not an X-ray" is pneumo/checks/scope.py's call.
    rgb = np.zeros((128, 160, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 30
    decoded = decode(encode(Image.fromarray(rgb), "PNG"))
    assert decoded.image.mode == "RGB" and decoded.warnings == []


def test_multi_frame_tiff_uses_the_first_frame():
    first, second = synthetic_xray(), 255 - synthetic_xray()
    data = encode(Image.fromarray(first), "TIFF", save_all=True, append_images=[Image.fromarray(second)])
    decoded = decode(data)
    np.testing.assert_array_equal(grey(decoded), first)
    assert any("first" in w for w in decoded.warnings)


# --- refused inputs ----------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 100)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    )


def refusal(source) -> str:
    with pytest.raises(InputError) as caught:
        decode(source)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in refusal(tmp_path / "empty.png")
    assert "empty" in refusal(b"")


def test_text_file(tmp_path):
    (tmp_path / "notes.png").write_text("these are not pixels\n" * 20)
    assert "not an image" in refusal(tmp_path / "notes.png")


def test_postscript_is_not_opened():
    # EPS would make Pillow run Ghostscript: it must not be tried at all.
    assert "not an image" in refusal(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")


def test_truncated_jpeg():
    data = encode(Image.fromarray(synthetic_xray()), "JPEG")
    assert "truncated" in refusal(data[: len(data) // 2])


@pytest.mark.parametrize("width, height", [(8_000, 8_000), (40_000, 40_000)])
def test_decompression_bomb(width, height):
    # 64 MP passes Pillow's own limit but not ours; 1600 MP trips Pillow's error.
    assert "megapixels" in refusal(png_claiming(width, height))


def test_too_small():
    message = refusal(encode(Image.fromarray(synthetic_xray(MIN_SIDE - 1, 200)), "PNG"))
    assert f"at least {MIN_SIDE}" in message


def test_too_large_file(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as out:
        out.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert "larger than" in refusal(path)


def test_missing_file_and_folder(tmp_path):
    assert "not found" in refusal(tmp_path / "nope.png")
    assert "not a file" in refusal(tmp_path)


def test_stretch_of_a_flat_image_is_black():
    assert (stretch_to_uint8(np.full((4, 4), 7, np.uint16)) == 0).all()


# --- DICOM ---------------------------------------------------------------------


def dicom(pixels, *, photometric="MONOCHROME2", bits_stored=None, syntax=None, encapsulated=None, **elements) -> bytes:
    """A DICOM file (bytes) of greyscale pixels, with a patient name and ID to leak."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, PATIENT_ID, "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = encapsulated if encapsulated is not None else pixels.tobytes()
    if encapsulated is not None:
        ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_8_bit_matches_the_same_image_as_png(real_xray, tmp_path):
    path = tmp_path / "xray.dcm"
    path.write_bytes(dicom(real_xray))
    from_dicom = decode(path)
    from_png = decode(encode(Image.fromarray(real_xray), "PNG"))
    assert from_dicom.kind == "dicom" and from_dicom.image.mode == "L"
    np.testing.assert_array_equal(np.asarray(from_dicom.image), np.asarray(from_png.image))


def test_dicom_found_by_magic_without_suffix(real_xray, tmp_path):
    path = tmp_path / "upload.bin"
    path.write_bytes(dicom(real_xray))
    assert decode(path).kind == "dicom"


def test_dicom_16_bit_with_rescale(real_xray):
    stored = real_xray.astype(np.uint16) * 15 + 100  # fits 12 bits
    data = dicom(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024)
    expected = stretch_to_uint8(real_xray)  # a linear map stretches back to the same picture
    assert np.abs(grey(decode(data)) - expected).max() <= 1


def test_dicom_monochrome1_is_inverted(real_xray):
    decoded = decode(dicom(255 - real_xray, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(np.asarray(decoded.image), real_xray)


def test_dicom_voi_window(real_xray):
    stored = real_xray.astype(np.uint16) * 16
    decoded = grey(decode(dicom(stored, bits_stored=12, WindowCenter=128 * 16, WindowWidth=64 * 16)))
    assert (decoded[real_xray < 90] == 0).all()  # below the window: black
    assert (decoded[real_xray > 165] == 255).all()  # above it: white
    inside = decoded[(real_xray > 100) & (real_xray < 155)]
    assert inside.size and 0 < inside.min() and inside.max() < 255


def test_dicom_multi_frame_uses_the_first(real_xray):
    frames = np.stack([real_xray, 255 - real_xray])
    decoded = decode(dicom(frames, NumberOfFrames=2))
    np.testing.assert_array_equal(np.asarray(decoded.image), real_xray)
    assert any("first" in w for w in decoded.warnings)


def test_dicom_jpeg_baseline_decodes(real_xray):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    jpeg = encode(Image.fromarray(real_xray), "JPEG", quality=95)
    decoded = decode(dicom(real_xray, syntax=JPEGBaseline8Bit, encapsulated=encapsulate([jpeg])))
    assert np.abs(grey(decoded) - real_xray).mean() < 3


def test_dicom_signed_16_bit(real_xray):
    signed = real_xray.astype(np.int16) * 8 - 1000
    decoded = decode(dicom(signed, PixelRepresentation=1))
    assert np.abs(grey(decoded) - stretch_to_uint8(real_xray)).max() <= 1


def test_dicom_compressed_without_decoder_names_the_syntax():
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    pixels = synthetic_xray()
    data = dicom(pixels, syntax=JPEGLosslessSV1, encapsulated=encapsulate([b"\xff\xd8\xff\xd9"]))
    message = refusal(data)
    assert "JPEG Lossless" in message and JPEGLosslessSV1 in message


def test_dicom_without_pixels():
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "no image" in refusal(buffer.getvalue())


def test_dicom_never_reveals_the_patient():
    pixels = synthetic_xray()
    texts = []
    for data in (
        dicom(pixels),
        dicom(np.stack([pixels, pixels]), NumberOfFrames=2),
        dicom(synthetic_xray(40, 40)),  # too small
        dicom(pixels)[:300],  # cut inside the header
        dicom(pixels)[:-500],  # cut inside the pixels
    ):
        try:
            decoded = decode(data)
            texts += decoded.warnings + [repr(decoded), repr(decoded.image.info)]
        except InputError as err:
            texts.append(str(err))
    for text in texts:
        assert "Doe" not in text and "Jane" not in text and PATIENT_ID not in text


# --- hostile and odd files (the corpus of tests/hostile_files.py, decoded in process) ----------


def test_gif_and_animated_gif_use_the_first_frame():
    from tests.hostile_files import gif

    still, animated = decode(gif(1)), decode(gif(3))
    assert still.image.size == (300, 256) and still.warnings == []
    np.testing.assert_array_equal(np.asarray(animated.image), np.asarray(still.image))
    assert any("only the first" in note for note in animated.warnings)


def test_float_tiff_ignores_non_finite_pixels():
    from tests.hostile_files import nan_float_tiff

    shown = grey(decode(nan_float_tiff()))
    assert shown.max() == 255 and shown.std() > 30  # one NaN no longer turns the picture black
    assert (shown[10:20, 10:20] == 0).all()  # NaN shows as the darkest value


def test_deflated_dicom_is_inflated_with_a_cap():
    from tests.hostile_files import deflate_bomb

    assert "expand to more than" in refusal(deflate_bomb(inflated_gb=1))


def test_deflated_dicom_within_the_cap_decodes(real_xray):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    decoded = decode(dicom(real_xray, syntax=DeflatedExplicitVRLittleEndian))
    np.testing.assert_array_equal(np.asarray(decoded.image), real_xray)


def test_jpeg_in_dicom_must_match_the_dicom_header():
    from tests.hostile_files import lying_jpeg_dicom

    assert "header says 64 x 64" in refusal(lying_jpeg_dicom(4000))
    assert "megapixels" in refusal(lying_jpeg_dicom(13000))


def test_dicom_frame_table_pointing_at_one_fragment_is_refused():
    from tests.hostile_files import frame_table_dicom

    assert "damaged or incomplete" in refusal(frame_table_dicom(4000))


def test_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    from tests.hostile_files import many_scans_jpeg

    data = many_scans_jpeg(2000)
    scans = many_scans_jpeg(0).count(b"\xff\xda") + 2000  # the encoder's own scans, then 2000 repeats
    assert f"stored in {scans} passes" in refusal(data)


def test_tiff_with_60000_directories_is_not_walked():
    from tests.hostile_files import many_ifds_tiff

    decoded = decode(many_ifds_tiff())
    assert decoded.image.size == (128, 128)
    assert any("only the first" in note for note in decoded.warnings)


def test_large_images_are_shrunk_to_2048_px():
    from pneumo.inputs.decode import MAX_SIDE

    decoded = decode(encode(Image.fromarray(np.tile(synthetic_xray(), (20, 20))), "PNG"))  # 3200 x 2560
    assert max(decoded.image.size) <= MAX_SIDE and decoded.image.size == (1600, 1280)


@pytest.mark.parametrize("builder", ["limit_png_16bit", "limit_float_tiff"])
def test_16_bit_and_float_at_the_size_limit_stay_under_600_mb(tmp_path, builder):
    """Decoded in a fresh process so that its peak memory is the decoder's alone (VmHWM:
    ru_maxrss would carry over the parent's peak across fork and exec)."""
    import subprocess
    import sys

    from tests import hostile_files
    from tests.conftest import ROOT

    path = tmp_path / "limit.bin"
    path.write_bytes(getattr(hostile_files, builder)())
    script = ("import re, sys; from pneumo.inputs.decode import decode; d = decode(sys.argv[1]); "
              "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)")
    out = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[-1]) < 600, f"peak {out[-1]} MB"


@pytest.mark.parametrize("seed", range(20))
def test_garbage_only_ever_raises_input_error(seed):
    """Random damage to real files: a message or an image, never another exception."""
    rng = np.random.default_rng(seed)
    sources = [encode(Image.fromarray(synthetic_xray()), fmt) for fmt in ("PNG", "JPEG", "TIFF", "GIF")]
    sources.append(dicom(synthetic_xray()))
    data = bytearray(sources[seed % len(sources)])
    for position in rng.integers(0, len(data), 20):
        data[position] = rng.integers(0, 256)
    try:
        decoded = decode(bytes(data))
    except InputError:
        return
    # What decode promises for any image it returns (pneumo/inputs/decode.py)
    assert decoded.image.mode in ("L", "RGB") and decoded.kind in ("image", "dicom")
    assert MIN_SIDE <= min(decoded.image.size) and max(decoded.image.size) <= MAX_SIDE
    assert np.asarray(decoded.image).shape[:2] == decoded.image.size[::-1]  # the pixels are there
    assert all(isinstance(note, str) for note in decoded.warnings)
