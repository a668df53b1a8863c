"""Errors of the app that say what to do: a URL or a path sent as text to /predict, the Gradio
variables the app reads (GRADIO_SERVER_PORT, GRADIO_MCP_SERVER, GRADIO_SHARE), checked at start-up
like the PNEUMO_* ones, and a model folder that does not exist."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.app_server import running_app
from tests.conftest import ROOT, require_import

from ui import app_settings
from ui.uploads import INPUT_DESCRIPTION, NOT_A_FILE

gradio_client = require_import("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The bundled model, MCP asked for with a spelling Gradio itself would not take."""
    with running_app(None, tmp_path_factory.mktemp("app"), extra_env={"GRADIO_MCP_SERVER": "yes"}) as app:
        yield app


@pytest.mark.parametrize("api_name", ["/predict", "/predict_dicom"])
@pytest.mark.parametrize("text", ["https://example.com/xray.jpeg", "examples/adult.jpeg"])
def test_text_instead_of_a_file_gets_a_message_that_says_what_to_do(app, api_name, text):
    with pytest.raises(AppError) as refused:
        Client(app.url, verbose=False).predict(text, api_name=api_name)
    assert str(refused.value) == NOT_A_FILE
    assert "handle_file" in NOT_A_FILE and "verbose error reporting" not in str(refused.value)


def test_the_api_page_says_what_the_input_is():
    """What Client.view_api() prints beside /predict's and /predict_dicom's input (with MCP served, those
    two leave the API page: the app above cannot show it)."""
    from ui.uploads import UploadOnlyFile, UploadOnlyImage

    for component in (UploadOnlyImage(type="filepath"), UploadOnlyFile()):
        info = component.api_info()
        assert info["additional_description"] == INPUT_DESCRIPTION and "URL" not in info.get("description", "")
        assert component.data_model.model_json_schema()["title"] in ("ImageData", "FileData")  # the client's files


def test_mcp_asked_for_with_yes_is_served(app):
    with urllib.request.urlopen(f"{app.url}gradio_api/mcp/schema", timeout=60) as response:
        tools = json.loads(response.read())
    assert [tool["name"] for tool in tools] == ["analyse_chest_xray"]


@pytest.mark.parametrize("name, value, expected", [
    ("GRADIO_SERVER_PORT", "abc", "a port number from 1 to 65535"),
    ("GRADIO_SERVER_PORT", "70000", "a port number from 1 to 65535"),
    ("GRADIO_MCP_SERVER", "maybe", "1 or 0 (true or false, yes or no)"),
    ("GRADIO_SHARE", "sometimes", "1 or 0 (true or false, yes or no)"),
])
def test_a_malformed_gradio_variable_stops_the_app_with_one_line(tmp_path, name, value, expected):
    done = start_app(tmp_path, **{name: value})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"configuration error: {name}={value!r} is not valid: expected {expected}"


def test_a_missing_model_folder_stops_the_app_with_one_line(tmp_path):
    missing = tmp_path / "no-such-run"
    done = start_app(tmp_path, PNEUMO_MODEL_PATH=str(missing))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().startswith(f"error: cannot load the model: {missing} (PNEUMO_MODEL_PATH) does not "
                                          "exist"), done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]


def start_app(tmp_path, **variables):
    """`python app.py` with `variables` set (the bundled model otherwise), expected to stop at start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PNEUMO_", "GRADIO_"))}
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                               "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), **variables})


@pytest.mark.parametrize("value, expected", [("yes", True), ("1", True), ("True", True), ("on", True),
                                             ("no", False), ("0", False), ("", False), ("off", False)])
def test_the_usual_spellings_of_a_switch(value, expected):
    assert app_settings.requested([], {"GRADIO_MCP_SERVER": value}) is expected
    assert app_settings.check([], {"GRADIO_SHARE": value}).share is expected
    assert app_settings.requested(["--mcp"], {"GRADIO_MCP_SERVER": value}) is True
