"""Decoding's edges: extreme aspect ratios, DICOM without its preamble, a
worker never blamed falsely, and a CLI run that loses no file's line."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from pneumo import cli
from pneumo.inputs.decode import MAX_ASPECT_RATIO, Decoded, InputError, decode
from pneumo.inputs.dicom import looks_like_dicom
from pneumo.inputs.sandbox import BROKEN, DecoderPool, Worker, WorkerFailed
from tests.test_cli import assert_prediction_line, run_cli, xrays  # noqa: F401  (xrays: a fixture)

STRIP = "times the other"  # the refusal of an image far longer than wide


def png16(width, height) -> bytes:
    """A 16-bit greyscale PNG, half dark and half bright (small: it compresses well)."""
    pixels = np.zeros((height, width), np.uint16)
    pixels[:, : width // 2] = 60000
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def preambleless_dicom(pixels) -> bytes:
    """A DICOM data set as some systems write it: no 128-byte preamble, no "DICM", no meta header."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality, ds.Rows, ds.Columns = "DX", *pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return out.getvalue()


@pytest.mark.parametrize("width, height", [(140000, 64), (64, 140000)])
def test_a_strip_of_9_megapixels_gets_a_true_message(width, height):
    """Both used to fail: one as "may be damaged", the other as a zero-width image."""
    with pytest.raises(InputError, match=STRIP) as error:
        decode(png16(width, height))
    assert f"{width} x {height}" in str(error.value)


@pytest.mark.parametrize("width, height", [(64 * MAX_ASPECT_RATIO, 64), (64, 64 * MAX_ASPECT_RATIO),
                                           (100 * MAX_ASPECT_RATIO, 100)])
def test_the_most_elongated_accepted_images_decode_to_a_usable_size(width, height):
    image = decode(png16(width, height)).image
    assert min(image.size) >= 32 and max(image.size) <= 2048
    assert image.size[0] > image.size[1] if width > height else image.size[0] < image.size[1]


def test_a_strip_in_a_dicom_is_refused_alike():
    with pytest.raises(InputError, match=STRIP):
        decode(preambleless_dicom(np.zeros((64, 64 * MAX_ASPECT_RATIO + 64), np.uint8)))


def test_dicom_without_preamble_is_found_by_content():
    pixels = np.tile(np.arange(0, 250, 2, dtype=np.uint8), (100, 1))
    data = preambleless_dicom(pixels)
    assert data[128:132] != b"DICM" and looks_like_dicom(data)
    decoded = decode(data)  # bytes: no suffix to go by
    assert decoded.kind == "dicom"
    np.testing.assert_array_equal(np.asarray(decoded.image), pixels)


def test_other_formats_are_not_taken_for_dicom():
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"):
        out = io.BytesIO()
        Image.new("L", (64, 64), 90).save(out, fmt)
        assert not looks_like_dicom(out.getvalue()), fmt
    assert not looks_like_dicom(b"\x08\x00") and not looks_like_dicom(b"plain text, long enough")


def test_the_sandbox_refuses_a_strip_and_keeps_its_worker(tmp_path):
    """A 64 x 140000 strip used to come back as a zero-width image: the worker was
    killed with a false "more memory or time" message."""
    strip, good = tmp_path / "strip.png", tmp_path / "good.png"
    strip.write_bytes(png16(64, 140000))
    Image.new("L", (100, 80), 50).save(good)
    pool = DecoderPool(size=1)
    try:
        (worker,) = pool._all
        with pytest.raises(InputError, match=STRIP) as error:
            pool.decode(strip)
        assert "memory" not in str(error.value)
        assert pool.decode(good).image.size == (100, 80)
        assert pool._all == {worker} and worker.process.poll() is None  # the same worker, alive
    finally:
        pool.close()


def test_the_mcp_path_reads_dicom_without_preamble():
    """The MCP tool's bytes go through a temporary file without suffix (DecoderPool.decode_bytes)."""
    pixels = np.tile(np.arange(0, 250, 2, dtype=np.uint8), (100, 1))
    pool = DecoderPool(size=1)
    try:
        decoded = pool.decode_bytes(preambleless_dicom(pixels))
    finally:
        pool.close()
    assert decoded.kind == "dicom"
    np.testing.assert_array_equal(np.asarray(decoded.image), pixels)


def test_a_worker_that_sends_no_image_is_not_blamed_on_memory():
    for header in ({"mode": "L", "width": 0, "height": 140000}, {"mode": "L", "width": 64}, {"mode": "CMYK"}):
        with pytest.raises(WorkerFailed) as failure:
            Worker._checked_geometry(header)
        assert str(failure.value) == BROKEN and "memory" not in BROKEN


def test_the_cli_keeps_every_good_files_line_next_to_a_strip(tiny_run, xrays, tmp_path):  # noqa: F811
    strip = tmp_path / "strip.png"
    strip.write_bytes(png16(64, 140000))
    paths = [xrays[0], strip, xrays[1]]
    result = run_cli("predict", "--json", *paths, model_path=tiny_run)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in paths]
    assert STRIP in lines[1]["error"]
    assert_prediction_line(lines[0], xrays[0])
    assert_prediction_line(lines[2], xrays[1])


def test_a_file_that_breaks_the_analysis_costs_only_its_own_line(tiny_run, xrays, monkeypatch, capsys):  # noqa: F811
    """Whatever fails inside the batch's analysis, the other files of the chunk still get their lines.
    (The command decodes in the sandbox, as archive runs do: its pool hands over the odd file.)"""
    import pneumo.inputs.sandbox
    from pneumo.model.loading import load_model

    real_decode = pneumo.inputs.sandbox.DecoderPool.decode
    broken = "broken.png"
    monkeypatch.setattr(pneumo.inputs.sandbox.DecoderPool, "decode",
                        lambda self, path: Decoded(image=None) if str(path) == broken else real_decode(self, path))
    paths = [str(xrays[0]), broken, str(xrays[1])]
    assert cli.predict(load_model(path=tiny_run), paths, as_json=True) == cli.EXIT_FAILED_FILE
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == paths
    assert set(lines[1]) == {"path", "error"} and "could not be analysed" in lines[1]["error"]
    assert_prediction_line(lines[0], xrays[0])
    assert_prediction_line(lines[2], xrays[1])


def test_the_files_beside_one_that_breaks_the_batch_get_the_rows_a_batch_gives(shared_data, monkeypatch, capsys):
    """Analysed one by one once a file broke their batch, the others get what the batch gives them: a
    PNEUMONIA verdict keeps its location and its lungs (the command and archive runs share this path)."""
    import pneumo.inputs.sandbox
    from pneumo.model.loading import BUNDLED_DIR, load_model

    loaded = load_model(BUNDLED_DIR)
    films = [str(path) for path in sorted((shared_data / "val" / "PNEUMONIA").glob("*.jpeg"))[:2]]
    assert cli.predict(loaded, films, as_json=True) == 0
    batch = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["label"] for line in batch] == ["PNEUMONIA"] * 2  # measured: both
    real_decode = pneumo.inputs.sandbox.DecoderPool.decode
    monkeypatch.setattr(pneumo.inputs.sandbox.DecoderPool, "decode",
                        lambda self, path: Decoded(image=None) if path == "broken.png" else real_decode(self, path))
    assert cli.predict(loaded, [films[0], "broken.png", films[1]], as_json=True) == cli.EXIT_FAILED_FILE
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for alone, together in zip((lines[0], lines[2]), batch):
        assert alone["label"] == together["label"] and alone["location"] is not None and alone["lungs"] is not None
        assert alone["location"]["zones"] == together["location"]["zones"]
        assert alone["location"]["peak"] == pytest.approx(together["location"]["peak"], abs=1e-3)
        assert alone["pneumonia_probability"] == pytest.approx(together["pneumonia_probability"], abs=1e-4)
