"""`python -m pneumo`, run as a subprocess against the tiny trained run."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, synthetic_xray

from pneumo.analysis import MODEL_KEYS

RESULT_KEYS = {"path", "scope", "population", "reason", "label", "pneumonia_probability", "probabilities",
               "threshold", "warnings", "research", "checks", "model", "location"}


def run_cli(*args, model_path):
    env = {**os.environ, "PNEUMO_MODEL_PATH": str(model_path), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1"}
    env.pop("PNEUMO_MODEL_REPO", None)
    return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    """Twelve readable X-ray-like files (more than the progress threshold) of several formats."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = []
    for i, kind in enumerate(["normal", "bacteria", "virus"] * 4):
        path = folder / f"{kind}-{i}.{['png', 'jpeg', 'bmp'][i % 3]}"
        synthetic_xray(kind, seed=i, size=96).save(path)
        paths.append(path)
    return paths


def assert_prediction_line(line, path):
    assert set(line) == RESULT_KEYS
    assert line["path"] == str(path)
    assert line["scope"] == "ok" and line["reason"] is None and line["research"] is None
    assert line["label"] in ("NORMAL", "PNEUMONIA")
    assert 0.0 <= line["pneumonia_probability"] <= 1.0
    assert set(line["probabilities"]) == {"NORMAL", "BACTERIAL", "VIRAL"}
    assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert line["pneumonia_probability"] == pytest.approx(
        line["probabilities"]["BACTERIAL"] + line["probabilities"]["VIRAL"], abs=1e-4)
    assert isinstance(line["warnings"], list)
    assert set(line["model"]) == set(MODEL_KEYS)
    assert line["model"]["source"] == "path" and len(line["model"]["sha256"]) == 64


def test_predict_json_lines_and_progress(tiny_run, xrays):
    result = run_cli("predict", "--json", *xrays, model_path=tiny_run)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(xrays)
    for line, path in zip(lines, xrays):
        assert_prediction_line(line, path)
    assert f"{len(xrays)}/{len(xrays)}" in result.stderr.splitlines()


def test_one_bad_file_among_good_ones(tiny_run, xrays, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an x-ray")
    paths = [xrays[0], bad, xrays[1]]
    result = run_cli("predict", "--json", *paths, model_path=tiny_run)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in paths]  # order kept
    assert set(lines[1]) == {"path", "error"} and "not an image" in lines[1]["error"]
    assert_prediction_line(lines[0], xrays[0])
    assert_prediction_line(lines[2], xrays[1])

    table = run_cli("predict", *paths, model_path=tiny_run)
    assert table.returncode == 1
    rows = table.stdout.splitlines()
    assert rows[0].startswith("label") and len(rows) == 4
    assert rows[2].startswith("ERROR") and str(bad) in rows[2]
    assert rows[1].split()[0] in ("NORMAL", "PNEUMONIA") and rows[1].endswith(str(xrays[0]))


def test_info_prints_the_identity(tiny_run):
    result = run_cli("info", model_path=tiny_run)
    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)
    assert set(MODEL_KEYS) <= set(identity)
    assert {"classes", "threshold", "metrics", "fallback_reason"} <= set(identity)
    assert identity["source"] == "path"
    assert identity["classes"] == ["NORMAL", "BACTERIAL", "VIRAL"]


def test_missing_model_is_a_clear_error(tmp_path):
    result = run_cli("info", model_path=tmp_path / "no-run")
    assert result.returncode == 2
    assert "cannot load the model" in result.stderr


def test_help_lists_the_commands(tmp_path):
    result = run_cli("--help", model_path=tmp_path)
    assert result.returncode == 0
    assert "predict" in result.stdout and "info" in result.stdout
