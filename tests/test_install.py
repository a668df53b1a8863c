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
    """`installed`: (the pneumo command, the folder it was installed into, or None for a whole venv)."""
    command, site = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", **({"PYTHONPATH": str(site)} if site else {}))
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
    # The version, from the installed package's metadata (no pyproject.toml beside an installed copy).
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert identity["version"] == version
    assert run(pneumo_command, "--version", cwd=tmp_path).stdout.strip() == f"pneumo {version}"


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


# `pip install .` alone, in a fresh virtual environment: the library and the command
# serve on ONNX Runtime, without TensorFlow; what needs an extra says which.

@pytest.fixture(scope="module")
def plain_install(tmp_path_factory):
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True,
                               text=True, timeout=1800)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


def test_a_plain_install_predicts_without_tensorflow(plain_install, tmp_path):
    film = ROOT / "examples" / "child-normal.jpeg"
    result = run((plain_install / "pneumo", None), "predict", "--json", film, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] == "NORMAL"
    archive = run((plain_install / "pneumo", None), "predict", film.parent, "--out", tmp_path / "rows.csv",
                  cwd=tmp_path)
    assert archive.returncode == 0 and "4 files: ok 4" in archive.stderr, archive.stderr
    no_tensorflow = subprocess.run([str(plain_install / "python"), "-c", "import tensorflow"], capture_output=True,
                                   text=True, cwd=tmp_path)
    assert no_tensorflow.returncode != 0 and "No module named 'tensorflow'" in no_tensorflow.stderr


@pytest.mark.parametrize("args, env, extra", [
    (["info"], {"PNEUMO_RUNTIME": "keras"}, "pneumonia-detector[keras]"),
    (["predict", "EXAMPLES", "--out", "rows.jsonl", "--engine", "ray"], {}, "pneumonia-detector[ray]"),
    (["predict", "EXAMPLES", "--out", "rows.parquet"], {}, "pneumonia-detector[parquet]"),
])
def test_what_a_plain_install_lacks_names_its_extra(plain_install, tmp_path, args, env, extra):
    args = [str(ROOT / "examples") if arg == "EXAMPLES" else arg for arg in args]
    result = subprocess.run([str(plain_install / "pneumo"), *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**{k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")},
                                              "HF_HUB_OFFLINE": "1", **env})
    assert result.returncode == 2, result.stderr
    assert extra in result.stderr and "Traceback" not in result.stderr


def test_the_extras_pin_what_the_requirement_files_pin():
    import tomllib

    def pins(lines):
        lines = (line.split("#")[0].strip().lower() for line in lines)
        return dict(line.split("==") for line in lines if "==" in line)

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    files = {**pins((ROOT / "requirements-dev.txt").read_text().splitlines())}
    for name in ("requirements.txt", "requirements-keras.txt", "requirements-train.txt"):
        files.update(pins((ROOT / name).read_text().splitlines()))
    for extra, requirements in extras.items():
        for name, version in pins(requirements).items():
            assert files.get(name) == version, f"[{extra}] pins {name}=={version}, the requirement files {files.get(name)}"
    assert "tensorflow-cpu" not in pins((ROOT / "requirements.txt").read_text().splitlines())
