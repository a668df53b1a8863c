"""Configuration errors are loud: a malformed PNEUMO_* value stops the app's and the
CLI's start-up with a message that names the variable (pneumo/settings.py)."""

import os
import re
import subprocess
import sys

import pytest

from pneumo import settings
from pneumo.model.loading import BUNDLED_DIR, load_model
from tests.conftest import ROOT

# One malformed value for every variable that can be malformed (the others are free text).
MALFORMED = {
    "PNEUMO_MODEL_REPO": "not a repo//id",
    "PNEUMO_RUNTIME": "fast",
    "PNEUMO_ONNX_THREADS": "four",
    "PNEUMO_DECODE_MEMORY_MB": "1GB",
    "PNEUMO_DECODE_CPU_S": "0",
    "PNEUMO_DECODE_TIMEOUT_S": "-1",
    "PNEUMO_KEEP_UPLOADS_S": "nan",
    "PNEUMO_SWEEP_EVERY_S": "ten",
    "PNEUMO_ALLOW_PRIVATE_URLS": "maybe",
    "PNEUMO_TRAIN_WORKERS": "many",
    "PNEUMO_NOTEBOOK_TEST": "perhaps",
}
FREE_TEXT = {name for name, variable in settings.VARIABLES.items() if variable.parse is settings._text}


def clean_env(**extra):
    env = {name: value for name, value in os.environ.items() if not name.startswith("PNEUMO_")}
    return {**env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **extra}


def test_every_variable_that_can_be_malformed_is_tried():
    assert set(MALFORMED) | FREE_TEXT == set(settings.VARIABLES)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_value_is_an_error_that_names_it(monkeypatch, name):
    monkeypatch.setenv(name, MALFORMED[name])
    with pytest.raises(settings.SettingError, match=re.escape(f"{name}={MALFORMED[name]!r}")):
        settings.check_all()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_the_cli_stops_and_names_it(name):
    done = subprocess.run([sys.executable, "-m", "pneumo", "info"], cwd=ROOT, capture_output=True, text=True,
                          env=clean_env(**{name: MALFORMED[name]}), timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert f"configuration error: {name}=" in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("name", list(MALFORMED))
def test_the_app_stops_at_start_up_and_names_it(name, tmp_path):
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=clean_env(**{name: MALFORMED[name]}, GRADIO_TEMP_DIR=str(tmp_path / "gradio"),
                                        GRADIO_SERVER_PORT="1"))  # never listens: it must stop first
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"configuration error: {name}=" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_defaults_and_good_values(monkeypatch):
    for name in settings.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    values = settings.check_all()
    assert values["PNEUMO_RUNTIME"] == "auto" and values["PNEUMO_ONNX_THREADS"] is None
    assert (values["PNEUMO_DECODE_MEMORY_MB"], values["PNEUMO_DECODE_TIMEOUT_S"]) == (1024, 8.0)
    assert values["PNEUMO_ALLOW_PRIVATE_URLS"] is False
    for name, text, value in [("PNEUMO_ONNX_THREADS", " 3 ", 3), ("PNEUMO_RUNTIME", "ONNX-Float", "onnx-float"),
                              ("PNEUMO_ALLOW_PRIVATE_URLS", "true", True), ("PNEUMO_KEEP_UPLOADS_S", "2.5", 2.5),
                              ("PNEUMO_MODEL_REPO", "owner/pneumo-vgg16", "owner/pneumo-vgg16")]:
        monkeypatch.setenv(name, text)
        assert settings.setting(name) == value, name


def test_bad_onnx_threads_never_fall_back_to_keras(monkeypatch):
    """The original failure: int8 could not load, and `auto` quietly served Keras instead."""
    monkeypatch.setenv("PNEUMO_ONNX_THREADS", "four")
    monkeypatch.delenv("PNEUMO_RUNTIME", raising=False)
    with pytest.raises(settings.SettingError, match="PNEUMO_ONNX_THREADS"):
        load_model(BUNDLED_DIR)


def test_an_unknown_name_is_reported(monkeypatch):
    monkeypatch.setenv("PNEUMO_RUNTIM", "keras")  # a typo
    assert "PNEUMO_RUNTIM" in settings.unknown_names()


def test_a_misspelt_name_gets_the_likely_setting():
    done = subprocess.run([sys.executable, "-m", "pneumo", "--version"], cwd=ROOT, capture_output=True, text=True,
                          env=clean_env(PNEUMO_MODEL_PTH="runs/x"), timeout=300)
    assert done.returncode == 0  # --version needs no setting
    done = subprocess.run([sys.executable, "-m", "pneumo", "info"], cwd=ROOT, capture_output=True, text=True,
                          env=clean_env(PNEUMO_MODEL_PTH="runs/x", PNEUMO_ONNX_THREAD="2"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "PNEUMO_MODEL_PTH is set but is no setting of pneumo; did you mean PNEUMO_MODEL_PATH?" in done.stderr
    assert "PNEUMO_ONNX_THREAD is set but is no setting of pneumo; did you mean PNEUMO_ONNX_THREADS?" in done.stderr
    assert "did you mean" not in settings.unknown_name_warning("PNEUMO_SOMETHING_ELSE")


def test_the_readme_lists_every_variable():
    readme = (ROOT / "README.md").read_text()
    configuration = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"PNEUMO_[A-Z_]+", configuration)) == set(settings.VARIABLES)
