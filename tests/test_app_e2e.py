"""The Gradio app end to end: `python app.py` in a subprocess, called through gradio_client."""

import hashlib
import inspect
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.app_server import left_in_temp, running_app
from tests.conftest import require_import, synthetic_xray

gradio_client = require_import("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from pneumo import analysis as pneumo_analysis  # noqa: E402
from pneumo.model.loading import BUNDLED_DIR, load_model  # noqa: E402
from pneumo.model.run_folder import ADULT_REPORT  # noqa: E402

RESULT_KEYS = {"scope", "population", "reason", "label", "pneumonia_probability", "probabilities", "threshold", "lungs",
               "warnings", "research", "checks", "model", "location"}
MODEL_KEYS = set(pneumo_analysis.MODEL_KEYS)


@pytest.fixture(scope="module")
def app(tiny_run, tmp_path_factory):
    with running_app(tiny_run, tmp_path_factory.mktemp("app")) as app:
        yield app


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Good and bad files, named so that they can be looked for afterwards."""
    folder = tmp_path_factory.mktemp("uploads")
    files = {}

    def add(name, data):
        files[name] = folder / name
        files[name].write_bytes(data)

    good = io.BytesIO()
    synthetic_xray("bacteria", seed=7, size=128).save(good, "PNG")
    add("upload-good.png", good.getvalue())
    jpeg = io.BytesIO()
    synthetic_xray("normal", seed=8, size=256).save(jpeg, "JPEG", quality=90)
    add("upload-truncated.jpeg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    add("upload-text.png", b"These are notes, not an X-ray.\n" * 20)
    add("upload-empty.png", b"")
    tiny = io.BytesIO()
    synthetic_xray("normal", seed=9, size=20).save(tiny, "PNG")
    add("upload-tiny.png", tiny.getvalue())
    add("upload-scan.dcm", dicom_bytes(np.asarray(synthetic_xray("virus", seed=10, size=96).convert("L"))))
    return files


def dicom_bytes(pixels):
    """An uncompressed 8-bit greyscale DICOM file."""
    import pydicom  # a serving dependency (requirements.txt)
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def assert_verdict(result, heatmap, tiny_run):
    assert set(result) == RESULT_KEYS
    assert result["scope"] == "ok" and result["reason"] is None and result["research"] is None
    assert result["label"] in ("NORMAL", "PNEUMONIA")
    assert set(result["probabilities"]) == {"NORMAL", "BACTERIAL", "VIRAL"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    sick = result["pneumonia_probability"]
    assert sick == pytest.approx(result["probabilities"]["BACTERIAL"] + result["probabilities"]["VIRAL"], abs=1e-4)
    assert result["label"] == ("PNEUMONIA" if sick >= result["model"]["threshold"] else "NORMAL")
    assert isinstance(result["warnings"], list)
    model = result["model"]
    assert set(model) == MODEL_KEYS
    assert model["source"] == "path" and model["fallback_reason"] is None
    assert model["sha256"] == hashlib.sha256((tiny_run / "model.keras").read_bytes()).hexdigest()
    with Image.open(heatmap) as overlay:
        assert overlay.mode == "RGB" and min(overlay.size) >= 64


def test_the_api_takes_one_file(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert len(endpoints["/predict"]["parameters"]) == 1
    assert len(endpoints["/predict"]["returns"]) == 2


def test_good_image_gives_a_verdict(client, uploads, tiny_run):
    result, heatmap = client.predict(handle_file(uploads["upload-good.png"]), api_name="/predict")
    assert_verdict(result, heatmap, tiny_run)


def test_real_xray(client, shared_data, tiny_run):
    xray = sorted((shared_data / "val" / "PNEUMONIA").glob("*.jpeg"))[0]
    result, heatmap = client.predict(handle_file(xray), api_name="/predict")
    assert_verdict(result, heatmap, tiny_run)


@pytest.mark.parametrize("api_name", ["/predict", "/predict_dicom"])
def test_dicom(client, uploads, tiny_run, api_name):
    result, heatmap = client.predict(handle_file(uploads["upload-scan.dcm"]), api_name=api_name)
    assert_verdict(result, heatmap, tiny_run)


@pytest.mark.parametrize("name, message", [
    ("upload-text.png", "not an image"),
    ("upload-empty.png", "empty"),
    ("upload-truncated.jpeg", "truncated"),
    ("upload-tiny.png", "20 x 20 pixels"),
])
def test_bad_input_is_explained(client, uploads, name, message):
    with pytest.raises(AppError) as error:
        client.predict(handle_file(uploads[name]), api_name="/predict")
    assert message in str(error.value)


def test_good_image_works_after_bad_ones(client, uploads, tiny_run):
    for name in ("upload-text.png", "upload-truncated.jpeg"):
        with pytest.raises(AppError):
            client.predict(handle_file(uploads[name]), api_name="/predict")
    result, heatmap = client.predict(handle_file(uploads["upload-good.png"]), api_name="/predict")
    assert_verdict(result, heatmap, tiny_run)


def test_uploads_are_deleted_and_never_logged(app, client, uploads):
    for name, path in uploads.items():  # every file, good or bad, once more
        try:
            client.predict(handle_file(path), api_name="/predict")
        except AppError:
            pass
    sent = {hashlib.sha256(path.read_bytes()).hexdigest() for path in uploads.values()}
    left = left_in_temp(app)
    assert not [path for path in left if path.name in uploads]
    assert not [path for path in left if hashlib.sha256(path.read_bytes()).hexdigest() in sent]
    # What stays are the heatmaps sent back (the app's upload sweeper removes them later).
    assert all(path.suffix == ".png" for path in left), left
    log = app.log.read_text()
    assert not [name for name in uploads if name in log or name.rsplit(".", 1)[0] in log]


def test_model_panel(tiny_app):
    """The model panel names a Hub model's repo, revision and commit, and puts a fallback in bold."""
    app = tiny_app
    hub = {**app.MODEL.identity, "source": "hub", "repo": "someone/pneumo", "revision": "v1", "commit": "ab" * 20}
    assert "hub · someone/pneumo@v1 (commit `ababababab`)" in app.model_panel(hub)
    assert "Fallback" not in app.model_panel(hub)
    reason = "could not load someone/pneumo@v1 from the Hub: offline"
    fallback = {**app.MODEL.identity, "source": "bundled", "fallback_reason": reason}
    assert f"**Fallback: {reason}; serving the bundled model instead.**" in app.model_panel(fallback)
    assert "**Validation figures:** accuracy" in app.model_panel(fallback)
    # It names the runtime that serves.
    assert "ONNX Runtime, int8 (`onnx-int8`)" in app.model_panel({**hub, "runtime": "onnx-int8"})
    assert "Keras on TensorFlow (`keras`)" in app.model_panel({**hub, "runtime": "keras"})


def test_the_model_panel_gives_the_adult_answer_its_own_threshold_and_figures(tiny_app):
    """An adult's verdict says "it answers PNEUMONIA from 38%": the panel, whose other lines are the
    children's model's, says the same of the adults' answer, with its radiologist-read figures."""
    identity = load_model(BUNDLED_DIR).identity
    report = json.loads((BUNDLED_DIR / ADULT_REPORT).read_text())
    panel = tiny_app.model_panel(identity)
    assert f"**Adults' answer** (films read as an adult's): decision threshold {report['threshold']:.2f}" in panel
    read = sum(report["cross_validated"]["films"].values())
    assert f"on {read} adult films read by radiologists (5 folds by patient, where it was tuned): ROC AUC " \
           f"{report['cross_validated']['roc_auc']:.3f}" in panel
    # The served answer predates the locked split: the panel claims no locked figures for it...
    assert "locked away" not in panel and identity["adult"].get("locked") is None
    # ...and shows them, beside the tuning ones, for an answer the locked split scored.
    scored = {"films_read": 155, "patients": 136, "metrics": {"roc_auc": 0.951, "sensitivity": 0.932}}
    panel = tiny_app.model_panel({**identity, "adult": {**identity["adult"], "locked": scored}})
    assert "on 155 films of 136 patients locked away from every fit and choice: ROC AUC 0.951 · sensitivity 0.932" \
        in panel
    assert "Adults' answer" not in tiny_app.model_panel({**identity, "adult": None})  # a folder without one


@pytest.mark.parametrize("probabilities", [None, {"NORMAL": 0.3, "PNEUMONIA": 0.7}])
def test_a_verdict_without_the_three_classes_hides_the_breakdown(tiny_app, probabilities):
    """A model that only tells normal from pneumonia: the verdict, and no breakdown panel (never None
    to a Label, which the page cannot read)."""
    app = tiny_app
    result = {"scope": "ok", "population": "adult", "reason": None, "label": "PNEUMONIA", "pneumonia_probability": 0.7,
              "probabilities": probabilities, "threshold": 0.5, "warnings": [], "model": {"threshold": 0.4}}
    verdict, breakdown, notes, heatmap_panel, where = app.show(result)
    assert verdict["value"]["label"] == "PNEUMONIA"
    assert {bar["label"] for bar in verdict["value"]["confidences"]} == {"PNEUMONIA", "NORMAL"}
    assert breakdown == {"__type__": "update", "value": {}, "visible": False}
    assert "**70%**" in notes and heatmap_panel["visible"] is True


def test_the_queue_looks_for_work_every_5_ms(tiny_app):
    """Gradio's queue polls for an event it may start, every millisecond by default (5% of a core while the
    app is idle); app.py makes it 5 ms. Not a public setting of Gradio's: this fails when its queue stops
    reading the attribute as well as when app.py stops setting it."""
    from gradio import queueing

    assert tiny_app.demo._queue.sleep_when_free == 0.005
    assert "asyncio.sleep(self.sleep_when_free)" in inspect.getsource(queueing.Queue.start_processing)


def test_gradio_keeps_one_record_of_requests_and_never_summarises_them(tiny_app, monkeypatch):
    """Gradio summarised every request it had recorded (up to 10,000) with pandas after each request, for
    its monitoring page, which the app does not serve (test_the_monitoring_page_is_off)."""
    queue = tiny_app.demo._queue
    monkeypatch.setattr(queue, "_get_df", lambda records: pytest.fail("Gradio summarised the requests"))
    monkeypatch.setattr(queue, "events_recorded", queue.events_recorded + 10_000)  # 10,000 requests later
    queue.compute_analytics_summary([{"function": "predict", "status": "success", "process_time": 0.1}])
    assert queue.ANALYTICS_MAX_EVENTS == 1


def test_the_monitoring_page_is_off(app):
    """Gradio's /monitoring would print a link to its dashboard of the requests (their times, their
    sessions) in the log; the app serves no such page."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{app.url}monitoring", timeout=30)
    assert refused.value.code == 403
