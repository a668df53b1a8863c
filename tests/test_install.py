"""The installed package: a wheel built from the checkout as it is now (inside the test, so
never a stale copy) and installed into a temporary folder; its `pneumo` command, with the
bundled model as package data. The checkout stays clean: the build runs on a copy."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What `pip install .` reads (pyproject.toml): the package, its dependency list and its readme.
SOURCES = ("pyproject.toml", "requirements.txt", "README.md", "pneumo")


@pytest.fixture(scope="module")
def pneumo_command(tmp_path_factory):
    """`pneumo` from a wheel of the current checkout, installed (without dependencies: the test's
    environment has them) into a folder of its own."""
    work = tmp_path_factory.mktemp("install")
    before = build_leftovers()
    source, wheels, target = work / "source", work / "wheels", work / "site"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.pyi")}
                                            if (ROOT / name).is_dir() else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # --no-build-isolation: the build uses the pinned setuptools (requirements-dev.txt), no download.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=600)
    wheel, = wheels.glob("pneumonia_detector-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=600)
    assert build_leftovers() == before, "the build wrote into the checkout"
    return target / "bin" / "pneumo", target


def build_leftovers() -> set[str]:
    """build/ and *.egg-info entries in the checkout (git ignores them, so ask with --ignored)."""
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    return {line for line in status if "build/" in line or ".egg-info" in line}


def run(installed, *args, cwd):
    command, site = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}  # the bundled model
    env.update(HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(site))
    # Run outside the checkout, so that only the installed package can answer.
    return subprocess.run([str(command), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_info_names_the_installed_bundled_model(pneumo_command, tmp_path):
    result = run(pneumo_command, "info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)
    assert identity["source"] == "bundled"
    assert Path(identity["path"]).resolve() != (ROOT / "pneumo" / "bundled_model").resolve()
    assert Path(identity["path"]).is_relative_to(pneumo_command[1])  # the installed copy
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
