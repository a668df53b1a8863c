"""`python -m pneumo`, run as a subprocess against the tiny trained run, and (from run_bundled on) the bundled model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, synthetic_xray

from pneumo.analysis import MODEL_KEYS

RESULT_KEYS = {"path", "scope", "population", "reason", "label", "pneumonia_probability", "probabilities", "lungs",
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


# The bundled model from here on: it answers children and adults, as the command's users get it.

def run_bundled(*args, cwd=ROOT, env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
    return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300,
                          env={**base, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})})


EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def folder_with_notes(tmp_path_factory):
    """The examples and a file that is no image, as a folder from an export often has."""
    import shutil

    folder = tmp_path_factory.mktemp("export")
    for film in sorted(EXAMPLES.glob("*.jpeg")):
        shutil.copy(film, folder / film.name)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_the_help_names_every_format_and_field():
    """The formats the decoders take (as the app and the MCP tool list them) and every field of the result."""
    from pneumo.analysis import RESULT_FIELDS
    from pneumo.inputs.pixels import SUPPORTED

    done = run_bundled("predict", "--help")
    text = " ".join(done.stdout.split())  # argparse wraps lines at the terminal's width
    assert done.returncode == 0 and SUPPORTED in text, text
    assert [field for field in RESULT_FIELDS if f'"{field}"' not in text] == [], text


def test_the_version_comes_from_pyproject():
    import tomllib

    import pneumo

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert pneumo.__version__ == version
    done = run_bundled("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"pneumo {version}", done
    info = run_bundled("info")
    assert info.returncode == 0 and json.loads(info.stdout)["version"] == version, info.stderr


def test_a_folder_skips_what_is_no_image_and_ends_with_the_summary(folder_with_notes):
    done = run_bundled("predict", "--json", folder_with_notes)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(Path(line["path"]).name for line in lines) == sorted(p.name for p in EXAMPLES.glob("*.jpeg"))
    assert all("error" not in line for line in lines)
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("4 files: ok 4 (child: NORMAL 1, PNEUMONIA 2; adult: NORMAL 1); errors 0; "
                              "skipped 1 non-image files; this run 4 files in "), summary


def test_the_table_says_whose_answer_each_verdict_is(folder_with_notes):
    done = run_bundled("predict", folder_with_notes / "adult.jpeg", folder_with_notes / "child-normal.jpeg")
    assert done.returncode == 0, done.stderr
    header, adult, child = done.stdout.splitlines()[:3]
    assert header.split()[:2] == ["label", "answer"]
    assert adult.split()[:2] == ["NORMAL", "adult"] and adult.endswith("adult.jpeg")
    assert child.split()[:2] == ["NORMAL", "child"] and child.endswith("child-normal.jpeg")
    assert "(adult: NORMAL 1" in done.stderr or "adult: NORMAL 1" in done.stderr, done.stderr


def test_heatmaps_are_written_as_the_app_shows_them(folder_with_notes, tmp_path):
    import numpy as np
    from PIL import Image

    from pneumo.analysis import analyse
    from pneumo.inputs.sandbox import DecoderPool
    from pneumo.overlay import picture

    film = folder_with_notes / "child-viral-pneumonia.jpeg"
    done = run_bundled("predict", "--json", "--heatmaps", tmp_path / "maps", film)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    written = Path(line["heatmap_file"])
    assert written.parent == tmp_path / "maps" and written.suffix == ".png"
    pool = DecoderPool(size=1)  # decoded as the command decodes
    try:
        shown = picture(analyse(pool.decode(film)))
    finally:
        pool.close()
    with Image.open(written) as image:
        assert image.size == shown.size
        assert np.abs(np.asarray(image.convert("RGB"), float) - np.asarray(shown.convert("RGB"), float)).mean() < 1
    assert line["location"] is not None  # the command's own analysis keeps where the evidence is


def test_a_missing_model_folder_is_named_as_missing(tmp_path):
    done = run_bundled("info", env={"PNEUMO_MODEL_PATH": str(tmp_path / "no-such-run")})
    assert done.returncode == 2
    assert f"{tmp_path / 'no-such-run'} (PNEUMO_MODEL_PATH) does not exist" in done.stderr, done.stderr
    assert "missing config.json" not in done.stderr
