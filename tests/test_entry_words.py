"""Each entry point speaks its own words, from one source of facts: the MCP tool's disclaimer names the
training data of the answer it relays, the command line never asks to upload, the tool's description
lists the formats the decoder takes, and a refusal carries no note of how the image was read as a film."""

import ast
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT, require_import

from pneumo.analysis import analyse
from pneumo.answers.populations import LEARNT_FROM
from pneumo.checks.scope import NOT_CHEST_XRAY, OK
from pneumo.inputs import pixels
from pneumo.inputs.pixels import APP, COMMAND, MCP, SUPPORTED, words_for
from pneumo.model.loading import load_model
from ui import mcp_tool

skimage_data = require_import("skimage.data")
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def bundled():
    return load_model()


def bundled_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
    return {**env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


# --- the MCP tool: each population's own facts --------------------------------------------------------

def test_the_tool_relays_the_disclaimer_of_the_answer_it_gives(bundled):
    adult = json.loads(mcp_tool.tool_result(analyse(EXAMPLES / "adult.jpeg", bundled)))
    child = json.loads(mcp_tool.tool_result(analyse(EXAMPLES / "child-normal.jpeg", bundled)))
    assert (adult["population"], child["population"]) == ("adult", "child")
    assert LEARNT_FROM["adult"] in adult["disclaimer"] and "children" not in adult["disclaimer"]
    assert LEARNT_FROM["child"] in child["disclaimer"] and "adult" not in child["disclaimer"]
    moon = json.loads(mcp_tool.tool_result(analyse(Image.fromarray(skimage_data.moon()), bundled)))
    assert moon["population"] is None and "no verdict" in moon["disclaimer"]
    assert "children" not in moon["disclaimer"] and "adult" not in moon["disclaimer"]


def test_the_tool_describes_the_formats_the_decoder_takes():
    from pneumo.inputs.decode import IMAGE_FORMATS

    assert [name for name in IMAGE_FORMATS if name.lower() not in SUPPORTED.lower()] == []
    assert SUPPORTED in mcp_tool.TOOL_DESCRIPTION and "GIF" in mcp_tool.TOOL_DESCRIPTION
    for population in LEARNT_FROM.values():
        assert population in mcp_tool.TOOL_DESCRIPTION


# --- refusals in the command's and the tool's words ---------------------------------------------------

def test_the_command_line_never_asks_for_an_upload(tmp_path):
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes((EXAMPLES / "child-normal.jpeg").read_bytes()[:3000])
    done = subprocess.run([sys.executable, "-m", "pneumo", "predict", "--json", str(truncated)], cwd=ROOT,
                          env=bundled_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "truncated or corrupt" in error and "copy or export it again" in error, error
    assert "upload" not in error.lower(), error


def message_texts():
    """Every string of pneumo/inputs that is not a docstring: the refusals and their parts."""
    for path in sorted((ROOT / "pneumo" / "inputs").glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                yield path.name, node.value


@pytest.mark.parametrize("entry", [COMMAND, MCP])
def test_no_refusal_of_the_decoder_speaks_of_uploads_to_the_command_or_the_tool(entry):
    translations = {words for all_words in pixels.OWN_WORDS.values() for words in all_words}  # the table itself
    texts = [(name, text) for name, text in message_texts()
             if ("upload" in text.lower() or "server" in text) and text not in translations]
    assert texts, "no message found: the scan is broken"
    for name, text in texts:
        worded = words_for(text, entry)
        assert "upload" not in worded.lower(), (name, worded)
        if entry == COMMAND:
            assert "server" not in worded, (name, worded)


def test_the_app_keeps_its_own_words():
    error = pixels.InputError("The image file is truncated or corrupt; please upload it again.")
    assert error.words_for(APP) == str(error)
    assert error.words_for(MCP) == "The image file is truncated or corrupt; please send it again."


# --- a refusal carries no note of how the image was read as a film ------------------------------------

def test_a_uniform_image_is_refused_without_a_note_of_inverted_grey_levels(bundled):
    moon = analyse(Image.fromarray(skimage_data.moon()), bundled)
    assert moon.scope == NOT_CHEST_XRAY and "uniform" in moon.reason
    assert moon.warnings == []


def test_a_text_page_is_not_called_a_chest_x_ray_nor_turned(bundled):
    page = analyse(Image.fromarray(skimage_data.page()), bundled)
    assert page.scope != OK
    assert not any("on its side" in w or "inverted" in w for w in page.warnings), page.warnings
    assert "read as an adult's chest X-ray" not in page.reason, page.reason


def test_a_film_with_a_verdict_keeps_its_notes(bundled):
    turned = analyse(Image.open(EXAMPLES / "child-normal.jpeg").rotate(180, expand=True), bundled)
    assert turned.scope == OK and any("upside down" in w for w in turned.warnings)


# --- extras, as a checkout installs them ---------------------------------------------------------------

def test_the_extras_are_named_as_the_checkout_installs_them():
    """The package is on no index: every message that names an extra names the checkout's `.[extra]` too."""
    from pneumo import install_hint

    assert "pip install '.[parquet]'" in install_hint("parquet")
    for path in (ROOT / "pneumo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "pneumonia-detector[" in node.value:
                assert path.name == "__init__.py", f"{path}: {node.value!r} names the extra by the package's name"
