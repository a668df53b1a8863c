"""The run folder's contract (pneumo/model/run_folder.py): the config schema and who spells file names."""

import ast
import json
import shutil
from pathlib import Path

import pytest

from pneumo.model import run_folder
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.model.run_folder import ConfigError, read_config, validate_config, write_config
from tests.conftest import ROOT

GOOD = {"classes": ["NORMAL", "BACTERIAL", "VIRAL"], "image_size": 128, "threshold": 0.4, "temperature": 0.95,
        "class_bias": [0.0, -0.3, -0.8], "gradcam_layer": "block5_conv3"}


def test_a_good_config_passes_and_an_old_one_without_a_version_too():
    assert validate_config({**GOOD, "format_version": run_folder.FORMAT_VERSION}) is not None
    assert validate_config(GOOD) is not None  # folders from before format_version are version 1


@pytest.mark.parametrize("change, field", [
    ({"temperature": 0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"classes": ["NORMAL", "BACTERIAL"]}, "classes"),
    ({"classes": ["NORMAL", "VIRAL", "BACTERIAL"]}, "classes"),
    ({"threshold": 0}, "threshold"),
    ({"threshold": 1.0}, "threshold"),
    ({"threshold": 1.7}, "threshold"),
    ({"threshold": "0.4"}, "threshold"),
    ({"threshold": None}, "threshold"),
    ({"image_size": 0}, "image_size"),
    ({"class_bias": [0.0, 1.0]}, "class_bias"),
    ({"gradcam_layer": ""}, "gradcam_layer"),
    ({"format_version": run_folder.FORMAT_VERSION + 1}, "format_version"),
])
def test_a_bad_field_is_named(change, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        validate_config({**GOOD, **change})


def test_a_missing_class_is_named():
    with pytest.raises(ConfigError, match=r"'classes'.*missing \['VIRAL'\]"):
        validate_config({**GOOD, "classes": ["NORMAL", "BACTERIAL"]})


def test_write_refuses_what_read_would_refuse(tmp_path):
    with pytest.raises(ConfigError, match="'threshold'"):
        write_config(tmp_path, {**GOOD, "threshold": 2})
    write_config(tmp_path, GOOD)
    assert read_config(tmp_path)["format_version"] == run_folder.FORMAT_VERSION


def test_loading_a_bad_folder_names_the_field(tmp_path):
    """The model is refused before any runtime loads it: pneumo info and the app say why."""
    folder = tmp_path / "run"
    shutil.copytree(BUNDLED_DIR, folder, ignore=shutil.ignore_patterns("*.onnx", "*.png"))
    config = json.loads((folder / run_folder.CONFIG).read_text())
    (folder / run_folder.CONFIG).write_text(json.dumps({**config, "temperature": 0}))
    with pytest.raises(ConfigError, match="'temperature'"):
        load_model(folder)


FILE_NAMES = {value for name, value in vars(run_folder).items()
              if name.isupper() and isinstance(value, str) and "." in value and "/" not in value}


# training/deploy/space.py names the repository's own files (its README.md is the Space's, not a model card).
NOT_RUN_FOLDER_CODE = {"run_folder.py", "space.py"}


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for folder in ("pneumo", "training")
                                        for p in (ROOT / folder).rglob("*.py") if p.name not in NOT_RUN_FOLDER_CODE))
def test_only_run_folder_spells_the_file_names(path):
    """String literals in code (docstrings aside) never name a run-folder file: they import it."""
    tree = ast.parse((ROOT / path).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    spelled = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and isinstance(node.value, str) and id(node) not in docstrings and node.value in FILE_NAMES}
    assert not spelled, f"{path} spells {spelled}: use pneumo.model.run_folder's names"


def test_the_file_names_are_the_documented_ones():
    assert {"model.keras", "model.int8.onnx", "model.float.onnx", "config.json", "ood.npz",
            "population.npz"} <= FILE_NAMES
    assert Path(run_folder.__file__).name == "run_folder.py"


def test_the_card_is_rebuilt_from_the_folders_own_files(tmp_path):
    """training.report.card.rewrite_card, which every refit calls (scope checks, adult answer, opacity map,
    threshold): the bundled card comes back word for word, the adult answer and its map included."""
    from training.report.card import rewrite_card

    folder = tmp_path / "run"
    shutil.copytree(BUNDLED_DIR, folder)
    (folder / run_folder.CARD).unlink()
    rewrite_card(folder)
    card = (folder / run_folder.CARD).read_text()
    assert card == (BUNDLED_DIR / run_folder.CARD).read_text()
    assert "`adult.npz`" in card and "`adult_opacity.npz`" in card
