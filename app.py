"""Pneumonia Detector: the Gradio app (the Hugging Face Space entry point).

This file only wires the interface to `pneumo/`; the model, decoding and
the heatmap live there. On the default runtime (ONNX) neither TensorFlow
nor Keras is imported. Run `python app.py` (add `--share` for a public link).

API: `Client(url).predict(handle_file("xray.jpeg"), api_name="/predict")`
returns `(result, heatmap_path)`; `result` is pneumo.analysis.Analysis as a
dict (docs/result.md). When `result["scope"]` is not "ok" the model
gives no verdict: `label` is None, `reason` says why, `heatmap_path` is None.

MCP (`--mcp` or GRADIO_MCP_SERVER=1/true/yes/on): the one tool is `analyse_chest_xray`
(ui/mcp_tool.py); /predict and /predict_dicom then leave the API page,
since Gradio makes every documented endpoint a tool, but still answer clients.
"""

import argparse
import html
import os
import sys
from pathlib import Path

# Nothing of a visit is kept: no run history in the browser or a bucket, no telemetry.
os.environ["GRADIO_RUN_HISTORY"] = "False"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# Gradio's queue also keeps a record of each request (its time, duration, session) for its monitoring page, and
# after every request summarises all of them with pandas, on the request's slot: 1.4 ms a request at first, 6.6 ms
# once it holds 10,000. The page is off (launch() below); Gradio keeps one record and never summarises it.
os.environ["GRADIO_ANALYTICS_MAX_EVENTS"] = "1"
os.environ["GRADIO_ANALYTICS_CACHE_FREQUENCY"] = str(2**62)  # a summary every this many requests: never

from pneumo import settings  # noqa: E402

settings.limit_malloc_arenas()  # first, before any thread: what the request threads free is used again
settings.check_at_start_up()  # a malformed PNEUMO_* value stops the app here, by name, not as a quiet fallback
from ui import app_settings  # noqa: E402

# GRADIO_SERVER_PORT, GRADIO_MCP_SERVER, GRADIO_SHARE: checked the same way, before gradio reads them at import
OPTIONS = app_settings.check_at_start_up(sys.argv[1:], os.environ)
UPLOAD_FOLDER = settings.use_own_upload_folder()  # never another Gradio app's folder; before gradio is imported

from pneumo.model.loading import get_model, load_in_background  # noqa: E402

LOADING = load_in_background()  # first: the model loads while Gradio imports (most of the cold start)

import gradio as gr  # noqa: E402  (after the settings above)
from PIL import Image  # noqa: E402

from ui import mcp_tool  # noqa: E402
from ui.pictures import HeatmapImage  # noqa: E402
from pneumo.analysis import analyse  # noqa: E402
from pneumo.inputs.decode import MAX_FILE_BYTES, InputError  # noqa: E402
from pneumo.inputs.pixels import MCP as MCP_WORDS  # noqa: E402
from pneumo.inputs.fetch import read_reference  # noqa: E402
from pneumo.anatomy.location import describe  # noqa: E402
from pneumo.overlay import picture  # noqa: E402
from pneumo.inputs.sandbox import DecoderPool  # noqa: E402
from pneumo.checks.scope import OK  # noqa: E402
from ui.uploads import (  # noqa: E402
    UploadOnlyFile, UploadOnlyImage, UploadSweeper, discard_upload, keep_copies_of, uploaded_path)

DISCLAIMER = (
    "**Research demo, not a diagnosis.** The children's answer was trained on one public collection of "
    "paediatric chest X-rays, the adults' on adult X-rays of one hospital read by radiologists; their figures "
    "are estimates from that data and may not hold for other hospitals, machines or patients. Do not use it "
    "to make medical decisions."
)


WAITING = "The answer appears here when you press *Analyse*."
HEATMAP_ALT = "The X-ray with the model's heatmap over it: warm colours mark where its evidence for pneumonia is."

# Clickable examples: public films (examples/README.md), named for their label in the UI.
EXAMPLES = [Path(__file__).with_name("examples") / f"{name}.jpeg" for name in
            ("child-normal", "child-bacterial-pneumonia", "child-viral-pneumonia", "adult")]
keep_copies_of(EXAMPLES)  # Gradio's copies of them are needed for the next click: never swept
MCP = OPTIONS.mcp
# Local runs may let the MCP tool fetch from localhost or the LAN; a Space never should.
ALLOW_PRIVATE_URLS = settings.setting("PNEUMO_ALLOW_PRIVATE_URLS")


# Readable by everyone (WCAG AA contrast, checked by axe-core in tests/test_browser.py): Gradio's default
# orange button and its pale grey small print are too light on white.
THEME = gr.themes.Default().set(button_primary_background_fill="*primary_700",
                                button_primary_background_fill_hover="*primary_800",
                                body_text_color_subdued="*neutral_600")
# The Grad-CAM overlay as wide as its column, small X-rays scaled up, never taller than the window.
CSS = """#heatmap .image-frame, #heatmap img { width: 100%; }
#heatmap img { height: auto; max-height: 85vh; object-fit: contain; }"""


# What each runtime (pneumo/model/runtime.py) is, in the model panel's words.
RUNTIMES = {
    "onnx-int8": "ONNX Runtime, int8 (`onnx-int8`)",
    "onnx-float": "ONNX Runtime, float32 (`onnx-float`)",
    "keras": "Keras on TensorFlow (`keras`)",
}


FIGURE_NAMES = {"accuracy": "accuracy", "roc_auc": "ROC AUC", "sensitivity": "sensitivity",
                "specificity": "specificity", "bacterial_viral_auc": "bacterial-vs-viral AUC",
                "specificity_all_read": "specificity against every film read without opacity",
                "ece": "calibration error (ECE)"}


def _figures(metrics):
    return " · ".join(f"{label} {metrics[key]:.3f}" for key, label in FIGURE_NAMES.items()
                      if isinstance(metrics.get(key), (int, float)))


def model_panel(identity):
    where = identity["source"]
    if identity.get("repo"):
        where += f" · {identity['repo']}@{identity['revision']}"
        if identity.get("commit"):
            where += f" (commit `{identity['commit'][:10]}`)"
    lines = [
        f"**Model:** {identity.get('name') or 'unnamed'} · source: {where} · sha256 `{identity['sha256'][:12]}`",
        f"**Runtime:** {RUNTIMES.get(identity.get('runtime'), identity.get('runtime'))}",
        f"**Decision threshold** on the estimated pneumonia probability: {identity['threshold']:.2f}",
    ]
    figures = _figures(identity["metrics"])
    if figures:
        lines.append("**Validation figures:** " + figures)
    adult = identity.get("adult")
    if adult:  # the panel's other lines are the children's model's: an adult's verdict has its own
        line = (f"**Adults' answer** (films read as an adult's): decision threshold {adult['threshold']:.2f}; "
                f"on {adult['films_read']} adult films read by radiologists ({adult['measured_on']}, where it "
                f"was tuned): " + _figures(adult["metrics"]))
        if adult.get("locked"):
            locked = adult["locked"]
            line += (f"; on {locked['films_read']} films of {locked['patients']} patients locked away from every "
                     f"fit and choice: " + _figures(locked["metrics"]))
        lines.append(line)
    if identity.get("fallback_reason"):
        lines.append(f"**Fallback: {identity['fallback_reason']}; serving the bundled model instead.**")
    return "\n\n".join(lines)


def predict(upload):
    """One uploaded file (image or DICOM) -> (result dict, heatmap overlay).

    The events pass Gradio's raw file data (preprocess=False): gr.Image would
    otherwise open the file with Pillow first, failing on DICOM and on broken
    files with a generic error instead of the decoder's explanation.
    """
    path = uploaded_path(upload)  # one file, uploaded to this app: never a URL or a server path
    try:
        decoded = DECODERS.decode(path)  # in a sandboxed worker process (pneumo/inputs/sandbox.py)
    except InputError as error:
        raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
    finally:
        discard_upload(path)
    analysis = analyse(decoded, MODEL)
    return analysis.as_dict(), picture(analysis)


def analyse_chest_xray(image: str) -> str:
    """The MCP tool (its description: ui.mcp_tool.TOOL_DESCRIPTION).

    Args:
        image: the chest X-ray file as a base64 data URI (data:image/jpeg;base64,...) or an http(s) URL.
    """
    try:
        data = read_reference(image, allow_private=ALLOW_PRIVATE_URLS)  # size-capped, time-limited
        decoded = DECODERS.decode_bytes(data)  # in a sandboxed worker process, as uploads are
    except InputError as error:
        raise gr.Error(error.words_for(MCP_WORDS), print_exception=False) from None  # "send", not "upload"
    return mcp_tool.tool_result(analyse(decoded, MODEL))  # with the heatmap: a PNEUMONIA answer says where


def label_data(headline, confidences):
    """gr.Label's own format, sent as is (postprocess=False) so that the
    headline is the verdict by the model's threshold, not the largest bar."""
    return {"label": headline, "confidences": [{"label": k, "confidence": v} for k, v in confidences.items()]}


# What each population's estimate was calibrated on (pneumo/checks/scope.py routes a film to one of them).
CALIBRATED_ON = {
    "child": "This film was read as a young child's. The estimate is calibrated on the children's validation "
             "X-rays: of those that got an estimate like this one, about that share had pneumonia.",
    "adult": "This film was read as an adult's, so there is no bacterial/viral split. The estimate is "
             "calibrated on adult X-rays read by radiologists: of those that got an estimate like this one, "
             "about that share showed lung opacity suspicious for pneumonia.",
}


# Under every heatmap: what it is, and what it is not. Each population's heatmap comes from its own answer.
HEATMAP_MEANING = ("The colours show where the model's evidence is, with the lung fields outlined for orientation; "
                   "they are not a delineation of the disease.")
GRAD_CAM = "Warm colours mark the areas that raised the model's pneumonia estimate (Grad-CAM)."
OPACITY_MAP = ("Warm colours mark where the adult model sees opacity, as it learnt from radiologists' boxes around "
               "opacities on adult X-rays.")


def heatmap_source(population):
    """What the heatmap of a film of `population` is: adults' is the opacity map where the model has one."""
    return OPACITY_MAP if population == "adult" and MODEL.opacity_map is not None else GRAD_CAM


def show(result):
    """The API result -> updates of the verdict, the normal/bacterial/viral breakdown, the notes, the
    heatmap's panel and the words under it (where the evidence is). Outside the model's scope, no verdict:
    the verdict panel says "No verdict", the notes right under it say why, and what would read as an answer
    (breakdown, heatmap) is hidden. The Labels get their data as is (postprocess=False), so an empty one
    gets {}: the page cannot read None."""
    warnings = result["warnings"]
    if result["scope"] != OK:
        notes = [f"**Why:** {result['reason']}", *[f"ℹ️ {w}" for w in warnings]]
        return (gr.update(value=label_data("No verdict", {}), visible=True), gr.update(value={}, visible=False),
                "\n\n".join(notes), gr.update(visible=False), "")
    sick, threshold = result["pneumonia_probability"], result["threshold"]
    verdict = gr.update(value=label_data(result["label"], {"PNEUMONIA": sick, "NORMAL": 1 - sick}), visible=True)
    notes = [
        f"The model's estimate of the probability of pneumonia is **{sick:.0%}**; it answers PNEUMONIA "
        f"from {threshold:.0%}. {CALIBRATED_ON[result['population']]} It is a statistical estimate for "
        "X-rays like the validation ones, not a diagnosis.",
        *[f"⚠️ {warning}" for warning in warnings],
    ]
    where = [f"**{describe(result['location'])}**"] if result.get("location") else []
    meaning = f"{heatmap_source(result['population'])} {HEATMAP_MEANING}"
    return (verdict, breakdown_update(result["probabilities"]), "\n\n".join(notes), gr.update(visible=True),
            "\n\n".join([*where, meaning]))


def breakdown_update(probabilities):
    """The three classes when the model gave them; a verdict without them (a model that only tells
    normal from pneumonia) hides the panel rather than showing a bar for one class."""
    if not probabilities or not {"BACTERIAL", "VIRAL"} <= set(probabilities):
        return gr.update(value={}, visible=False)
    ranked = dict(sorted(probabilities.items(), key=lambda item: -item[1]))
    return gr.update(value=label_data(next(iter(ranked)), ranked), visible=True)


def cleared():
    """A new image: the last answer goes, its panels with it."""
    hidden = gr.update(value=None, visible=False)
    return hidden, hidden, WAITING, hidden, "", None


def build(loaded):
    # delete_cache stays off: UploadSweeper (ui/uploads.py) does that job and survives bad requests.
    with gr.Blocks(title="Pneumonia Detector", analytics_enabled=False) as demo:
        gr.Markdown("# Pneumonia Detector\nUpload a frontal chest X-ray. The model estimates whether it shows "
                    "pneumonia, whether bacterial or viral, and highlights the areas it relied on.")
        gr.Markdown(DISCLAIMER)
        with gr.Row():
            with gr.Column():
                image = UploadOnlyImage(label="Chest X-ray (JPEG, PNG, ...)", type="filepath", sources=["upload"],
                                 height=360, elem_id="xray")
                submit = gr.Button("Analyse", variant="primary")
                gr.Examples([[str(path)] for path in EXAMPLES], [image], cache_examples=False,
                            label="No X-ray at hand? Try one (then press Analyse)",
                            example_labels=[path.stem.replace("-", " ").capitalize() for path in EXAMPLES])
                dicom = UploadOnlyFile(label="…or a DICOM file (.dcm), analysed on upload", height=130,
                                       elem_id="dicom")
            with gr.Column():  # the answer; its panels appear with it (empty ones would only say "empty")
                verdict = gr.Label(label="Verdict (the model's estimate)", elem_id="verdict", visible=False)
                breakdown = gr.Label(label="Normal / bacterial / viral (the model's estimates)",
                                     elem_id="breakdown", visible=False)
                notes = gr.Markdown(WAITING, elem_id="notes")
                # Beside the answer it explains, as wide as the column (CSS above); words about it go under it.
                # A PNG written at zlib's fastest level (ui/pictures.py): a quarter of Gradio's own encoding time.
                heatmap = HeatmapImage(label="Where the model's evidence for pneumonia is",
                                       type="pil", format="png", interactive=False, elem_id="heatmap", visible=False,
                                       alt_text=HEATMAP_ALT)
                where = gr.Markdown(elem_id="where")
        with gr.Accordion("Model", open=True):
            gr.Markdown(model_panel(loaded.identity), elem_id="model")
        with gr.Accordion("API result (JSON)", open=False):
            result = gr.JSON(label="result")

        outputs = [verdict, breakdown, notes, heatmap, where, result]
        image.change(cleared, outputs=outputs, api_visibility="private", queue=False)
        for event, source, name in ((submit.click, image, "predict"), (dicom.upload, dicom, "predict_dicom")):
            event(predict, source, [result, heatmap], api_name=name, preprocess=False,
                  api_visibility="undocumented" if MCP else "public").success(
                show, result, [verdict, breakdown, notes, heatmap, where], api_visibility="private",
                postprocess=False)
        if MCP:  # the tool fetches URLs (bounded, pneumo/inputs/fetch.py): only served when asked for
            gr.api(analyse_chest_xray, api_name="analyse_chest_xray", api_description=mcp_tool.TOOL_DESCRIPTION)
    return demo


DECODERS = DecoderPool()  # the workers start up while the model loads


def loaded_model():
    """The model, loaded once before the first request. One that cannot load (a PNEUMO_MODEL_PATH that names no
    run folder, a PNEUMO_RUNTIME that cannot serve) ends the app with one line, as the command line says it."""
    LOADING.join()
    try:
        return get_model()
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        print(f"error: cannot load the model: {error}", file=sys.stderr)
        raise SystemExit(settings.EXIT_BAD_SETTING) from None


MODEL = loaded_model()
analyse(Image.new("L", (64, 64), 128), MODEL)  # warm up: the runtime allocates its buffers now
# Four at a time: a hostile upload holds its slot until its decoder is stopped (at most
# PNEUMO_DECODE_TIMEOUT_S); with 3 decoders, two such uploads leave room for everyone else.
demo = build(MODEL).queue(default_concurrency_limit=4, max_size=32)
# Gradio's queue looks for an event it may start every millisecond while it has none (idle, or four running):
# 5% of a core on the 2-core Xeon with nobody using the app. Every 5 ms: 2%, and a request starts at most 5 ms
# later (one client's p50 the same). Gradio has no setting for it; tests/test_app_e2e.py checks that it reads this.
demo._queue.sleep_when_free = 0.005
SWEEPER = UploadSweeper(demo)  # started with the server: it empties UPLOAD_FOLDER, and only that

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the Pneumonia Detector on "
                                     "GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860).")
    parser.add_argument("--share", action="store_true", help="also ask for a public gradio.live link")
    parser.add_argument("--mcp", action="store_true", help="also serve the analysis as an MCP tool at "
                        "/gradio_api/mcp/ (same as GRADIO_MCP_SERVER=1, true, yes or on)")
    share = parser.parse_args().share or OPTIONS.share
    SWEEPER.sweep_once()  # leftovers of an earlier run
    SWEEPER.start()
    demo.launch(share=share, max_file_size=MAX_FILE_BYTES, prevent_thread_lock=True, run_history=False,
                enable_monitoring=False, mcp_server=MCP, css=CSS, theme=THEME)
    if MCP and not demo.mcp_server:  # Gradio only prints why; an MCP run without MCP must not look fine
        sys.exit(demo.mcp_error or "The MCP server did not start.")
    if share and not demo.share_url:
        print("No public link could be created (no internet?); serving locally only.", flush=True)
    demo.block_thread()
