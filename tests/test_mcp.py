"""`python app.py --mcp`: the analysis as an MCP tool, called with the `mcp`
client over streamable HTTP, as an AI assistant would."""

import asyncio
import base64
import functools
import io
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tests.app_server import running_app
from tests.conftest import require_import

mcp = require_import("mcp")
skimage_data = require_import("skimage.data")
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from ui import app_settings, mcp_tool  # noqa: E402

TOOL = "analyse_chest_xray"
XRAY = "val/PNEUMONIA/person101_bacteria_483.jpeg"  # not one of the app's examples


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # The bundled model: its not-a-chest-X-ray check is the one that serves.
    # Private URLs allowed: the test's file server listens on 127.0.0.1.
    with running_app(None, tmp_path_factory.mktemp("mcp"), args=["--mcp"],
                     extra_env={"PNEUMO_ALLOW_PRIVATE_URLS": "1"}) as app:
        yield app


@pytest.fixture(scope="module")
def file_server(tmp_path_factory):
    """Serves a folder over HTTP on 127.0.0.1, for the URL form of the input."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def session_run(app, action):
    """Open an MCP session on the app, run `action(session)`, return its result."""
    async def run():
        async with streamable_http_client(app.url + "gradio_api/mcp/") as (read, write, _):
            async with mcp.ClientSession(read, write) as session:
                await session.initialize()
                return await action(session)
    return asyncio.run(run())


def call(app, image):
    return session_run(app, lambda session: session.call_tool(TOOL, {"image": image}))


def data_uri(data, mime="image/jpeg"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def answer(result):
    assert not result.isError, result.content
    return json.loads(result.content[0].text)


def test_only_the_analysis_is_a_tool_and_it_explains_itself(app):
    tools = session_run(app, lambda session: session.list_tools()).tools
    assert [tool.name for tool in tools] == [TOOL]
    description = tools[0].description
    for words in ("not a diagnosis", "data URI", "URL", "32 MB", "not_chest_xray", "outside_population",
                  "no verdict", "children aged 1 to 5"):
        assert words in description
    assert tools[0].inputSchema["required"] == ["image"]
    assert tools[0].inputSchema["properties"]["image"]["type"] == "string"


def test_a_real_xray_gets_a_verdict(app, shared_data):
    result = answer(call(app, data_uri((shared_data / XRAY).read_bytes())))
    assert result["scope"] == "ok" and result["reason"] is None
    assert result["label"] in ("NORMAL", "PNEUMONIA")
    assert set(result["probabilities"]) == {"NORMAL", "BACTERIAL", "VIRAL"}
    assert 0 <= result["pneumonia_probability"] <= 1
    assert result["label"] in result["summary"] and result["disclaimer"] == mcp_tool.disclaimer("child")
    assert "research" not in result
    assert (result["label"] == "PNEUMONIA") == (result["location"] is not None)


def test_a_photo_by_url_gets_no_verdict_and_the_reason(app, file_server):
    folder, base = file_server
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.png")
    result = answer(call(app, f"{base}/coffee.png"))
    assert result["scope"] == "not_chest_xray"
    assert result["label"] is None and result["probabilities"] is None and result["pneumonia_probability"] is None
    assert result["reason"] and result["summary"] == f"No verdict: {result['reason']}"
    assert "research" not in result  # the raw numbers would read as a verdict
    assert result["location"] is None


def test_a_broken_file_gets_a_clear_error(app, file_server):
    jpeg = io.BytesIO()
    Image.fromarray(skimage_data.camera()).save(jpeg, "JPEG")
    truncated = call(app, data_uri(jpeg.getvalue()[:2000]))
    assert truncated.isError and "truncated" in truncated.content[0].text.lower()
    not_a_reference = call(app, "/etc/passwd")
    assert not_a_reference.isError and "data URI" in not_a_reference.content[0].text
    missing = call(app, f"{file_server[1]}/missing.png")
    assert missing.isError and "HTTP 404" in missing.content[0].text


def test_the_ui_endpoints_still_answer_clients(app, shared_data):
    from gradio_client import Client, handle_file

    result, _ = Client(app.url, verbose=False).predict(handle_file(str(shared_data / XRAY)), api_name="/predict")
    assert result["scope"] == "ok"


@pytest.mark.parametrize("argv, environ, expected", [
    (["--mcp"], {}, True), ([], {"GRADIO_MCP_SERVER": "True"}, True), ([], {"GRADIO_MCP_SERVER": "true"}, True),
    ([], {}, False), ([], {"GRADIO_MCP_SERVER": "False"}, False), (["--share"], {"GRADIO_MCP_SERVER": "1"}, True),
    ([], {"GRADIO_MCP_SERVER": "yes"}, True), ([], {"GRADIO_MCP_SERVER": "off"}, False),
])
def test_mcp_is_asked_for_by_flag_or_gradios_variable(argv, environ, expected):
    """Any usual spelling of a switch (tests/test_app_errors.py: a malformed one stops the app)."""
    assert app_settings.requested(argv, environ) is expected


def test_the_sse_transport_lists_the_same_tool(app):
    from mcp.client.sse import sse_client

    async def run():
        async with sse_client(app.url + "gradio_api/mcp/sse") as (read, write):
            async with mcp.ClientSession(read, write) as session:
                await session.initialize()
                return await session.list_tools()
    assert [tool.name for tool in asyncio.run(run()).tools] == [TOOL]


@pytest.mark.parametrize("p, words", [(0.9998, "over 99%"), (0.0001, "under 1%"), (0.42, "42%")])
def test_the_summary_never_claims_certainty(p, words):
    from types import SimpleNamespace

    analysis = SimpleNamespace(label="PNEUMONIA" if p >= 0.39 else "NORMAL", pneumonia_probability=p,
                               probabilities={"NORMAL": 1 - p, "BACTERIAL": p / 2, "VIRAL": p / 2},
                               threshold=0.39, population="child", reason=None, location=None)
    assert f"estimated probability of pneumonia {words} (it answers PNEUMONIA from 39%)" in mcp_tool._summary(analysis)


def test_the_summary_says_where_the_evidence_is():
    from types import SimpleNamespace

    analysis = SimpleNamespace(label="PNEUMONIA", pneumonia_probability=0.9, threshold=0.39, population="adult",
                               reason=None, probabilities={"NORMAL": 0.1, "PNEUMONIA": 0.9},
                               location={"zones": ["right lower"]})
    summary = mcp_tool._summary(analysis)
    assert summary.endswith("The evidence is strongest in the right lower zone.")
    assert "adult's film is PNEUMONIA:" in summary  # no bacterial/viral claim for an adult
    assert "location" in mcp_tool.TOOL_DESCRIPTION and "not an outline of the disease" in mcp_tool.TOOL_DESCRIPTION


def test_a_dicom_without_preamble_is_read(app, shared_data):
    """The tool's bytes reach the decoder as a temporary file without suffix: DICOM is found by content."""
    import numpy as np

    from tests.test_decode_edges import preambleless_dicom

    pixels = np.asarray(Image.open(shared_data / XRAY).convert("L"))
    result = answer(call(app, data_uri(preambleless_dicom(pixels), "application/dicom")))
    assert result["scope"] == "ok" and result["label"] in ("NORMAL", "PNEUMONIA")
