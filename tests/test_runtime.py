"""The runtimes (pneumo/model/runtime.py): ONNX int8, ONNX float and Keras, how one is
chosen, and the ONNX models that `python -m training.deploy.quantize` and the
training report write."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pneumo.model import cpu
from pneumo.analysis import analyse, analyse_many
from pneumo.answers.calibration import calibrate
from pneumo.model.loading import BUNDLED_DIR, load_model, sha256_of
from pneumo.model.preprocess import preprocess
from pneumo.model.run_folder import FLOAT_ONNX, INT8_ONNX, KERAS_MODEL, ONNX_REPORT
from tests.conftest import ROOT, TINY_TRAIN_ARGS, require, synthetic_xray

# Largest change of a probability that int8 may make on the tiny model.
TOLERANCE = 0.02
FLOAT_TOLERANCE = 1e-4
VNNI, NO_VNNI = {"avx2", "avx512f", "avx512_vnni"}, {"sse4_2", "avx2", "fma"}


@pytest.fixture(scope="module")
def int8_run(tiny_run, synthetic_data, tmp_path_factory):
    """A copy of the tiny run, quantized by the CLI with --force (a one-epoch
    model sits near its threshold, where any change may flip a label, so the
    report step may have refused its int8 model)."""
    for module in ("onnxruntime", "tf2onnx", "onnx"):
        require(importlib.util.find_spec(module) is not None, f"{module} is not installed")
    run = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    done = subprocess.run([sys.executable, "-m", "training.deploy.quantize", str(run), "--data", str(synthetic_data),
                           "--calibration-images", "16", "--force"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture
def images():
    return [synthetic_xray(kind, seed, size=64) for seed, kind in enumerate(["normal", "bacteria", "virus"] * 3)]


def inputs_of(images, loaded):
    return np.concatenate([preprocess(image, loaded.config["image_size"]) for image in images])


def test_the_training_report_writes_the_onnx_models(tiny_run):
    """Every run folder can serve without TensorFlow: the float model always,
    int8 when it costs little enough (onnx.json says which)."""
    report = json.loads((tiny_run / ONNX_REPORT).read_text())
    assert (tiny_run / FLOAT_ONNX).is_file() and report["float"]["max_abs_diff"] <= FLOAT_TOLERANCE
    assert report["keras_sha256"] == sha256_of(tiny_run / KERAS_MODEL)
    assert (tiny_run / INT8_ONNX).is_file() == report["int8"]["written"]
    assert (tiny_run / FLOAT_ONNX).stat().st_size < 100_000  # weights come from model.keras


def test_no_onnx_skips_them(tiny_run, synthetic_data, tmp_path):
    """--no-onnx (training under JAX, where tf2onnx cannot export): the report
    writes no ONNX model and removes those of an earlier model.keras; Keras serves."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    done = subprocess.run([sys.executable, "-m", "training.train", "--data", str(synthetic_data), "--out", str(run),
                           *TINY_TRAIN_ARGS, "--resume", "--no-onnx"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(run.glob("*.onnx")) and not (run / ONNX_REPORT).exists()
    assert load_model(run, runtime="auto").identity["runtime"] == "keras"


def test_quantize_writes_the_models_and_their_figures(int8_run):
    report = json.loads((int8_run / ONNX_REPORT).read_text())
    int8 = report["int8"]
    assert int8["written"] and int8["bytes"] == (int8_run / INT8_ONNX).stat().st_size
    for name in ("keras", "runtime"):
        assert {"accuracy", "roc_auc"} <= set(int8[name])
    assert report["split"] == "train_holdout" and int8["calibration_images"] == 16
    assert int8["max_cost"] == 0.005 and isinstance(int8["accepted"], bool)
    assert int8["cost"]["accuracy"] == pytest.approx(int8["keras"]["accuracy"] - int8["runtime"]["accuracy"])
    assert report["keras_sha256"] == sha256_of(int8_run / KERAS_MODEL)


def test_onnx_float_equals_keras(int8_run, images):
    keras_model = load_model(int8_run, runtime="keras")
    onnx_float = load_model(int8_run, runtime="onnx-float")
    inputs = inputs_of(images, keras_model)
    keras_raw, keras_maps = keras_model.runtime(inputs)
    raw, maps = onnx_float.runtime(inputs)
    np.testing.assert_allclose(raw, keras_raw, atol=FLOAT_TOLERANCE)
    np.testing.assert_allclose(maps, keras_maps, atol=FLOAT_TOLERANCE * max(1.0, np.abs(keras_maps).max()))
    np.testing.assert_array_equal(onnx_float.runtime.head_kernel, keras_model.runtime.head_kernel)


def test_onnx_float_equals_keras_on_the_bundled_model(shared_data):
    keras_model = load_model(BUNDLED_DIR, runtime="keras")
    onnx_float = load_model(BUNDLED_DIR, runtime="onnx-float")
    from pneumo.inputs.decode import decode

    files = sorted((shared_data / "val" / "PNEUMONIA").glob("*.jpeg"))[:8]
    inputs = np.concatenate([preprocess(decode(path).image, 128) for path in files])
    np.testing.assert_allclose(onnx_float.runtime(inputs)[0], keras_model.runtime(inputs)[0], atol=FLOAT_TOLERANCE)


def test_int8_labels_agree_with_keras_on_val(shared_data):
    """The bundled int8 model gives Keras's label on at least 99% of val/."""
    require((BUNDLED_DIR / INT8_ONNX).is_file(), f"the bundled model has no {INT8_ONNX}")
    from pneumo.inputs.decode import decode

    keras_model = load_model(BUNDLED_DIR, runtime="keras")
    int8 = load_model(BUNDLED_DIR, runtime="onnx-int8")
    files = sorted((shared_data / "val").rglob("*.jpeg"))
    assert len(files) >= 300
    agree = 0
    for start in range(0, len(files), 32):
        inputs = np.concatenate([preprocess(decode(path).image, 128) for path in files[start:start + 32]])
        labels = [calibrate(loaded.runtime(inputs)[0], loaded.config)[:, 1:].sum(axis=1) >= loaded.config["threshold"]
                  for loaded in (keras_model, int8)]
        agree += int((labels[0] == labels[1]).sum())
    assert agree / len(files) >= 0.99, f"{agree} of {len(files)}"


def test_int8_agrees_with_keras_and_serves_by_default(int8_run, images, monkeypatch):
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(VNNI))
    loaded = load_model(int8_run)
    assert loaded.identity["runtime"] == "onnx-int8"
    inputs = inputs_of(images, loaded)
    keras_raw = load_model(int8_run, runtime="keras").runtime(inputs)[0]
    int8_raw = loaded.runtime(inputs)[0]
    assert int8_raw.shape == keras_raw.shape == (len(images), 3)
    np.testing.assert_allclose(int8_raw.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(int8_raw, keras_raw, atol=TOLERANCE)
    # analyse_many goes through it, in batches of any size, and analyse gives a heatmap
    analyses = analyse_many(images, loaded, batch_size=4)
    calibrated = calibrate(int8_raw, loaded.config)
    np.testing.assert_allclose([model_probability(a) for a in analyses], calibrated[:, 1] + calibrated[:, 2],
                               atol=1e-5)
    one = analyse(images[1], loaded)
    assert one.model["runtime"] == "onnx-int8"
    assert one.scope == "ok", one.reason  # only an answer in scope carries a heatmap
    assert one.heatmap.ndim == 2 and np.isfinite(one.heatmap).all()
    assert one.heatmap.min() >= 0 and one.heatmap.max() <= 1


def model_probability(analysis):
    """P(pneumonia) as the model computed it, in scope or not."""
    return analysis.pneumonia_probability if analysis.research is None else analysis.research["pneumonia_probability"]


@pytest.mark.parametrize("flags, expected", [(VNNI, "onnx-int8"), (NO_VNNI, "onnx-float"),
                                             ({"avx_vnni"}, "onnx-int8"), (set(), "onnx-float")])
def test_auto_takes_int8_only_with_vnni(int8_run, flags, expected, monkeypatch):
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert load_model(int8_run).identity["runtime"] == expected


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\n")
    assert cpu.cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "avx512f"}
    assert not cpu.has_vnni(cpu.cpu_flags(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu avx512_vnni\n")
    assert cpu.has_vnni(cpu.cpu_flags(cpuinfo))
    assert cpu.cpu_flags(tmp_path / "missing") == frozenset()


def test_pneumo_runtime_keras_forces_keras(int8_run, images, monkeypatch):
    monkeypatch.setenv("PNEUMO_RUNTIME", "keras")
    loaded = load_model(int8_run)
    assert loaded.identity["runtime"] == "keras"
    inputs = preprocess(images[1].convert("L"), loaded.config["image_size"])
    expected = np.asarray(loaded.runtime.model(inputs, training=False))[0]
    got = analyse(images[1], loaded, with_heatmap=False)
    calibrated = calibrate(expected, loaded.config)
    assert model_probability(got) == pytest.approx(float(calibrated[1] + calibrated[2]), abs=1e-6)


def test_keras_serves_a_folder_without_onnx_models(int8_run, tmp_path, monkeypatch):
    """An older run folder keeps loading; asking for ONNX by name says why it cannot."""
    old = tmp_path / "run"
    shutil.copytree(int8_run, old, ignore=shutil.ignore_patterns("*.onnx"))
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    assert load_model(old).identity["runtime"] == "keras"
    for name, missing in (("onnx-int8", INT8_ONNX), ("onnx-float", FLOAT_ONNX)):
        with pytest.raises(RuntimeError, match=f"has no {missing}"):
            load_model(old, runtime=name)


def test_a_stale_onnx_model_is_not_used(int8_run, tmp_path, monkeypatch):
    """After retraining, ONNX files made from the old model.keras must not answer."""
    stale = tmp_path / "run"
    shutil.copytree(int8_run, stale)
    with open(stale / KERAS_MODEL, "ab") as f:
        f.write(b"\0")  # another file: another sha256 (zip readers ignore trailing bytes)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(VNNI))
    assert load_model(stale, runtime="auto").identity["runtime"] == "keras"
    with pytest.raises(RuntimeError, match="another model.keras"):
        load_model(stale, runtime="onnx-int8")


def test_unknown_runtime_is_refused(int8_run, monkeypatch):
    monkeypatch.setenv("PNEUMO_RUNTIME", "int8")  # the old name: runtimes are named by what they are now
    with pytest.raises(ValueError, match="PNEUMO_RUNTIME"):
        load_model(int8_run)


def test_import_app_loads_neither_tensorflow_nor_keras():
    script = ("import sys, app; print(app.MODEL.identity['runtime']); "
              "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    env = {**_env(), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runtime, loaded = done.stdout.splitlines()[-2:]
    assert runtime in ("onnx-int8", "onnx-float")
    assert loaded == "False False"


def test_cli_predicts_and_names_the_runtime(int8_run, tmp_path):
    for i, kind in enumerate(["normal", "bacteria"]):
        synthetic_xray(kind, seed=40 + i, size=64).save(tmp_path / f"{kind}.png")
    Image.new("L", (8, 8)).save(tmp_path / "broken.png")
    env = {**_env(), "PNEUMO_MODEL_PATH": str(int8_run), "PNEUMO_RUNTIME": "onnx-int8"}
    done = subprocess.run([sys.executable, "-m", "pneumo", "predict", "--json", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["path"].rsplit("/", 1)[1] for line in lines] == ["bacteria.png", "broken.png", "normal.png"]
    assert "error" in lines[1] and lines[0]["label"] in ("NORMAL", "PNEUMONIA")
    assert lines[0]["model"]["runtime"] == "onnx-int8"
    assert done.returncode == 1  # the broken file
    info = subprocess.run([sys.executable, "-m", "pneumo", "info"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PNEUMO_RUNTIME": "onnx-float"})
    assert json.loads(info.stdout)["runtime"] == "onnx-float"


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
