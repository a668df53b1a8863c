"""`pip install .` (the README's test command runs it): the `pneumo` command of
the installed package, with the bundled model as package data."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require

COMMAND = Path(sys.executable).with_name("pneumo")


@pytest.fixture(scope="module")
def pneumo_command():
    require(COMMAND.is_file(), f"{COMMAND} not installed: run `.venv/bin/pip install --no-deps .`")
    return COMMAND


def run(command, *args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}  # the bundled model
    env.update(HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    # Run outside the checkout, so that only the installed package can answer.
    return subprocess.run([str(command), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_info_names_the_installed_bundled_model(pneumo_command, tmp_path):
    result = run(pneumo_command, "info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)
    assert identity["source"] == "bundled"
    assert Path(identity["path"]).resolve() != (ROOT / "pneumo" / "bundled_model").resolve()
    assert "site-packages" in identity["path"]
    bundled = (ROOT / "pneumo" / "bundled_model" / "model.keras").read_bytes()
    assert identity["sha256"] == hashlib.sha256(bundled).hexdigest()


def test_predict_json_through_the_command(pneumo_command, tmp_path):
    films = sorted((ROOT / "examples").glob("child-*.jpeg"))
    result = run(pneumo_command, "predict", "--json", *films, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(film) for film in films]
    assert {line["scope"] for line in lines} == {"ok"}
    labels = {Path(line["path"]).stem: line["label"] for line in lines}
    assert labels == {"child-normal": "NORMAL", "child-bacterial-pneumonia": "PNEUMONIA",
                      "child-viral-pneumonia": "PNEUMONIA"}
