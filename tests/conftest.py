"""Shared fixtures: a tiny trained run folder, the real data, the environment."""

import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "chest_xray"
ADULT_DATA = SHARED_DATA.parent / "adult_cxr"  # the NIH adult films (tests/test_scope.py)

# No phoning home from Gradio, no waiting on the closed network for the Hub.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require(condition, reason):
    """Skip when something optional is missing, but fail under CI=true,
    where the test command installs everything and nothing may skip."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason, allow_module_level=True)  # at a module's top it skips the module


def require_import(module):
    """Import what a test needs but the library does not (scikit-image's sample
    pictures, gradio_client, psutil, mcp...): skip without it, fail under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        require(False, f"{module} cannot be imported ({error}); requirements-dev.txt pins it")


@pytest.fixture(scope="session")
def shared_data():
    require(SHARED_DATA.is_dir(), f"real X-rays not found at {SHARED_DATA}")
    return SHARED_DATA


@functools.cache
def _chest(size) -> np.ndarray:
    """A real chest film (examples/child-normal.jpeg, a val/ film) at size x size, 0-255."""
    with Image.open(ROOT / "examples" / "child-normal.jpeg") as film:
        return np.asarray(film.convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float64)


def synthetic_xray(kind, seed, size=48):
    """A real chest film with a made-up texture that depends on the class (and seeded noise), so that a
    tiny model can learn something in one epoch, and that the anatomy check (pneumo/checks/anatomy.py)
    finds its lungs and heart as it does on any chest X-ray."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    pixels = 0.6 * _chest(size) + 20 * np.sin(3 * x) + rng.normal(0, 6, (size, size))
    if kind == "bacteria":
        pixels += 80 * np.exp(-((x - 0.3) ** 2 + (y - 0.55) ** 2) / 0.01)
    if kind == "virus":
        pixels += 18 * np.sin(25 * y)
    return Image.fromarray(np.uint8(np.clip(pixels, 0, 255))).convert("RGB")


def write_synthetic_dataset(root, patients=4, images_per_patient=3):
    """train/NORMAL and train/PNEUMONIA in the Kaggle naming scheme."""
    for p in range(1, patients + 1):
        for i in range(1, images_per_patient + 1):
            seed = 100 * p + i
            (root / "train" / "NORMAL").mkdir(parents=True, exist_ok=True)
            (root / "train" / "PNEUMONIA").mkdir(parents=True, exist_ok=True)
            synthetic_xray("normal", seed).save(root / "train" / "NORMAL" / f"IM-{p:04d}-{i:04d}.jpeg")
            synthetic_xray("bacteria", seed + 1).save(root / "train" / "PNEUMONIA" / f"person{p}_bacteria_{i}.jpeg")
            synthetic_xray("virus", seed + 2).save(root / "train" / "PNEUMONIA" / f"person{p + 50}_virus_{i}.jpeg")
    return root


TINY_TRAIN_ARGS = ["--image-size", "32", "--pretrained", "none", "--epochs", "1", "--images-per-class", "8",
                   "--batch-size", "8", "--holdout-fraction", "0.34", "--seed", "1"]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_data):
    """A run folder written by the real training CLI: 32 px, one epoch; plus a stand-in population
    check that reads every film as a young child's (a toy run has no adult films to fit one on, and
    without one no film gets a verdict: pneumo/checks/scope.py)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    subprocess.run([sys.executable, "-m", "training.train", "--data", str(synthetic_data), "--out", str(out),
                    *TINY_TRAIN_ARGS], cwd=ROOT, check=True, capture_output=True)
    route_every_film(out, "child")
    return out


def route_every_film(run, population):
    """Write a stand-in population.npz into `run` that routes every film to `population` ("child" or
    "adult"): zero weights, and an intercept far on that side of the threshold."""
    from pneumo.checks.population import PopulationCheck
    from pneumo.model.loading import load_model
    from pneumo.model.predict import GRID

    features = GRID * GRID * load_model(run).runtime.channels
    check = PopulationCheck(np.zeros(features), np.ones(features), np.zeros(features),
                            intercept=30.0 if population == "adult" else -30.0, threshold=0.5)
    check.save(run / PopulationCheck.FILE)



def run_audited(log, module, *args) -> subprocess.CompletedProcess:
    """`python -m module args` (tests/audited.py), every file it opens written to `log`; it must succeed."""
    done = subprocess.run([sys.executable, "-m", "tests.audited", str(log), module, *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_no_locked_film_opened(log, adults):
    """The command logged in `log` opened films of `adults`, but none of a locked patient's
    (training/adults/locked.py): the locked split never enters a fit or a calibration list."""
    from training.adults.answer import read_labels
    from training.adults.locked import locked_patients

    locked = locked_patients(adults)
    patient = {os.path.abspath(Path(adults) / name): row["patient"] for name, row in read_labels(adults).items()}
    opened = [patient[path] for path in Path(log).read_text().split("\n") if path in patient]
    assert locked and opened, (len(locked), len(opened))  # a lock to keep, and films it did read: the hook saw them
    assert not set(opened) & locked, sorted(set(opened) & locked)

@pytest.fixture
def tiny_app(tiny_run, monkeypatch):
    """app.py imported as the Space imports it, serving the tiny run (also when another test
    imported it first)."""
    from pneumo.model import loading
    from pneumo.model.loading import load_model

    monkeypatch.setenv("PNEUMO_MODEL_PATH", str(tiny_run))
    loading.get_model.cache_clear()
    try:
        app = importlib.import_module("app")  # loads the model, as the Space does
    finally:
        loading.get_model.cache_clear()
    monkeypatch.setattr(app, "MODEL", load_model(tiny_run))
    return app


# Files whose tests start app servers or browsers, train, build a wheel or read whole data splits.
# `pytest -m "not slow"` leaves them out: the quick loop for contributors (README: Quick start).
SLOW_FILES = {"test_adult.py", "test_app_e2e.py", "test_app_errors.py", "test_batch.py", "test_browser.py",
              "test_deploy.py", "test_hostile.py", "test_hub.py", "test_install.py", "test_joint.py",
              "test_labels.py", "test_load.py", "test_mcp.py", "test_ood.py", "test_opacity.py", "test_runtime.py",
              "test_scope.py", "test_stopping.py", "test_train_anywhere.py", "test_training.py",
              "test_upload_folder.py", "test_heatmap.py", "test_library.py", "test_cli.py", "test_entry_words.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
