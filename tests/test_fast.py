"""The int8 CPU path: `python -m training.quantize` and its use by pneumo (pneumo/fast.py)."""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pneumo.calibration import calibrate
from pneumo.fast import INT8_FILE, INT8_REPORT
from pneumo.loading import load_model
from pneumo.analysis import analyse, analyse_many
from pneumo.preprocess import preprocess
from tests.conftest import ROOT, require, synthetic_xray

# Largest change of a probability that int8 may make on the tiny model.
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def int8_run(tiny_run, synthetic_data, tmp_path_factory):
    """A copy of the tiny run, quantized by the CLI (the shared tiny run stays Keras only)."""
    for module in ("onnxruntime", "tf2onnx", "onnx"):
        require(importlib.util.find_spec(module) is not None, f"{module} is not installed")
    run = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    # --force: a one-epoch model sits near its threshold, where any change may flip a label.
    done = subprocess.run([sys.executable, "-m", "training.quantize", str(run), "--data", str(synthetic_data),
                           "--calibration-images", "16", "--force"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture
def images():
    return [synthetic_xray(kind, seed, size=64) for seed, kind in enumerate(["normal", "bacteria", "virus"] * 3)]


def test_quantize_writes_the_model_and_its_figures(int8_run):
    assert (int8_run / INT8_FILE).stat().st_size > 0
    report = json.loads((int8_run / INT8_REPORT).read_text())
    for runtime in ("keras", "int8"):
        assert {"accuracy", "roc_auc"} <= set(report[runtime])
    assert report["split"] == "train_holdout" and report["calibration_images"] == 16
    assert report["max_cost"] == 0.005 and isinstance(report["accepted"], bool)
    assert report["cost"]["accuracy"] == pytest.approx(report["keras"]["accuracy"] - report["int8"]["accuracy"])
    assert report["int8_bytes"] == (int8_run / INT8_FILE).stat().st_size
    assert report["keras_sha256"] == hashlib.sha256((int8_run / "model.keras").read_bytes()).hexdigest()


def test_int8_agrees_with_keras(int8_run, images, monkeypatch):
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    loaded = load_model(int8_run)
    assert loaded.fast is not None  # auto: the int8 model is there and matches model.keras
    inputs = np.concatenate([preprocess(image, loaded.config["image_size"]) for image in images])
    keras_raw = np.asarray(loaded.keras_model(inputs, training=False))
    int8_raw = loaded.fast(inputs)
    assert int8_raw.shape == keras_raw.shape == (len(images), 3)
    np.testing.assert_allclose(int8_raw.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(int8_raw, keras_raw, atol=TOLERANCE)
    # analyse_many goes through it, in batches of any size
    fast = analyse_many(images, loaded, batch_size=4)
    calibrated = calibrate(int8_raw, loaded.config)
    sick = [model_probability(a) for a in fast]
    np.testing.assert_allclose(sick, calibrated[:, 1] + calibrated[:, 2], atol=1e-5)
    keras_sick = [model_probability(a) for a in _keras_predictions(int8_run, images, monkeypatch)]
    np.testing.assert_allclose(sick, keras_sick, atol=2 * TOLERANCE)


def test_int8_gives_the_ood_checks_features_too(int8_run, images, tmp_path, monkeypatch):
    """The not-a-chest-X-ray check reads pooled features: the int8 model gives
    them in the same pass, so that Keras need not run at all."""
    from pneumo.ood import FILE, FeatureCheck

    run = tmp_path / "run"
    shutil.copytree(int8_run, run)
    channels = load_model(int8_run).features_and_probabilities.outputs[0].shape[-1]
    # A check that flags nothing: enough to make the analysis ask for features.
    FeatureCheck(mean=np.zeros(channels), components=np.eye(2, channels), scales=np.ones(2),
                 residual_variance=1.0, threshold=1e9).save(run / FILE)
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    loaded = load_model(run)
    assert loaded.ood_check is not None
    inputs = np.concatenate([preprocess(image, loaded.config["image_size"]) for image in images])
    out = loaded.fast.run(inputs)
    keras_features = np.asarray(loaded.features_and_probabilities(inputs, training=False)[0])
    assert out["features"].shape == keras_features.shape
    np.testing.assert_allclose(out["features"], keras_features, atol=0.05 * np.abs(keras_features).max())

    def no_keras(*args, **kwargs):
        raise AssertionError("Keras ran although the int8 model answers")

    loaded.__dict__["features_and_probabilities"] = no_keras
    assert len(analyse_many(images, loaded)) == len(images)


def model_probability(analysis):
    """P(pneumonia) as the model computed it, in scope or not."""
    return analysis.pneumonia_probability if analysis.research is None else analysis.research["pneumonia_probability"]


def _keras_predictions(run, images, monkeypatch):
    monkeypatch.setenv("PNEUMO_RUNTIME", "keras")
    return analyse_many(images, load_model(run))


def test_pneumo_runtime_keras_forces_keras(int8_run, images, monkeypatch):
    monkeypatch.setenv("PNEUMO_RUNTIME", "keras")
    loaded = load_model(int8_run)
    assert loaded.fast is None
    inputs = preprocess(images[1].convert("L"), loaded.config["image_size"])
    expected = np.asarray(loaded.keras_model(inputs, training=False))[0]
    got = analyse(images[1], loaded, with_heatmap=False)
    calibrated = calibrate(expected, loaded.config)
    assert model_probability(got) == pytest.approx(float(calibrated[1] + calibrated[2]), abs=1e-6)


def test_keras_without_an_int8_model(tiny_run, monkeypatch):
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    assert load_model(tiny_run).fast is None
    monkeypatch.setenv("PNEUMO_RUNTIME", "int8")
    with pytest.raises(RuntimeError, match=f"has no {INT8_FILE}"):
        _ = load_model(tiny_run).fast


def test_a_stale_int8_model_is_not_used(int8_run, tmp_path, monkeypatch):
    """After retraining, an int8 file made from the old model.keras must not answer."""
    stale = tmp_path / "run"
    shutil.copytree(int8_run, stale)
    report = json.loads((stale / INT8_REPORT).read_text())
    (stale / INT8_REPORT).write_text(json.dumps({**report, "keras_sha256": "0" * 64}))
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    assert load_model(stale).fast is None
    monkeypatch.setenv("PNEUMO_RUNTIME", "int8")
    with pytest.raises(RuntimeError, match="another model.keras"):
        _ = load_model(stale).fast


def test_unknown_runtime_is_refused(int8_run, monkeypatch):
    monkeypatch.setenv("PNEUMO_RUNTIME", "tpu")
    with pytest.raises(ValueError, match="PNEUMO_RUNTIME"):
        _ = load_model(int8_run).fast


def test_cli_predicts_with_int8(int8_run, tmp_path):
    for i, kind in enumerate(["normal", "bacteria"]):
        synthetic_xray(kind, seed=40 + i, size=64).save(tmp_path / f"{kind}.png")
    Image.new("L", (8, 8)).save(tmp_path / "broken.png")
    env = {"PNEUMO_MODEL_PATH": str(int8_run), "PNEUMO_RUNTIME": "int8"}
    done = subprocess.run([sys.executable, "-m", "pneumo", "predict", "--json", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env={**_env(), **env})
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["path"].rsplit("/", 1)[1] for line in lines] == ["bacteria.png", "broken.png", "normal.png"]
    assert "error" in lines[1] and lines[0]["label"] in ("NORMAL", "PNEUMONIA")
    assert done.returncode == 1  # the broken file


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
