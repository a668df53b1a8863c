"""Pneumonia Detector: the Gradio app (the Hugging Face Space entry point).

This file only wires the interface to `pneumo/`; the model, decoding and
the heatmap live there. On the default runtime (ONNX) neither TensorFlow
nor Keras is imported. Run `python app.py` (add `--share` for a public link).

API: `Client(url).predict(handle_file("xray.jpeg"), api_name="/predict")`
returns `(result, heatmap_path)`; `result` is pneumo.analysis.Analysis as a
dict (README: "The result"). When `result["scope"]` is not "ok" the model
gives no verdict: `label` is None, `reason` says why, `heatmap_path` is None.
"""

import argparse
import contextlib
import html
import os
from pathlib import Path

from pneumo.loading import get_model, load_in_background

LOADING = load_in_background()  # first: the model loads while Gradio imports (most of the cold start)

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from pneumo.analysis import analyse  # noqa: E402
from pneumo.decode import MAX_FILE_BYTES, InputError, decode  # noqa: E402
from pneumo.heatmap import overlay  # noqa: E402
from pneumo.scope import OK  # noqa: E402

DISCLAIMER = (
    "**Research demo, not a diagnosis.** The model was trained on one public collection of paediatric "
    "chest X-rays; its figures are estimates from that data and may not hold for other hospitals, "
    "machines or patients. Do not use it to make medical decisions."
)


def discard_upload(path):
    """Delete Gradio's temporary copy of an upload (uploads are medical data)."""
    upload_dir = Path(gr.utils.get_upload_folder()).resolve()
    file = Path(path).resolve()
    if upload_dir not in file.parents:
        return  # not an upload (a direct Python call): never delete it
    file.unlink(missing_ok=True)
    if file.parent != upload_dir:
        with contextlib.suppress(OSError):
            file.parent.rmdir()  # Gradio's per-upload folder, once empty


# What each runtime (pneumo/runtime.py) is, in the model panel's words.
RUNTIMES = {
    "onnx-int8": "ONNX Runtime, int8 (`onnx-int8`)",
    "onnx-float": "ONNX Runtime, float32 (`onnx-float`)",
    "keras": "Keras on TensorFlow (`keras`)",
}


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
    names = {"accuracy": "accuracy", "roc_auc": "ROC AUC", "sensitivity": "sensitivity",
             "specificity": "specificity", "bacterial_viral_auc": "bacterial-vs-viral AUC",
             "ece": "calibration error (ECE)"}
    figures = [f"{label} {identity['metrics'][key]:.3f}" for key, label in names.items()
               if isinstance(identity["metrics"].get(key), (int, float))]
    if figures:
        lines.append("**Validation figures:** " + " · ".join(figures))
    if identity.get("fallback_reason"):
        lines.append(f"**Fallback: {identity['fallback_reason']}; serving the bundled model instead.**")
    return "\n\n".join(lines)


def predict(upload):
    """One uploaded file (image or DICOM) -> (result dict, heatmap overlay).

    The events pass Gradio's raw file data (preprocess=False): gr.Image would
    otherwise open the file with Pillow first, failing on DICOM and on broken
    files with a generic error instead of the decoder's explanation.
    """
    path = upload["path"] if isinstance(upload, dict) else upload
    if not path:
        raise gr.Error("Please upload a chest X-ray first.", print_exception=False)
    if not Path(path).is_file():
        raise gr.Error("Uploads are deleted after each analysis: please upload the image again.",
                       print_exception=False)
    try:
        decoded = decode(path)
    except InputError as error:
        raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
    finally:
        discard_upload(path)
    analysis = analyse(decoded, MODEL)
    heatmap = overlay(analysis.image, analysis.heatmap) if analysis.heatmap is not None else None
    return analysis.as_dict(), heatmap


def label_data(headline, confidences):
    """gr.Label's own format, sent as is (postprocess=False) so that the
    headline is the verdict by the model's threshold, not the largest bar."""
    return {"label": headline, "confidences": [{"label": k, "confidence": v} for k, v in confidences.items()]}


def show(result):
    """The API result -> the verdict, the three-class breakdown, the notes.
    Outside the model's scope, no verdict: only why."""
    warnings = result["warnings"]
    if result["scope"] != OK:
        notes = [f"### ⚠️ No verdict\n\n{result['reason']}", *[f"ℹ️ {w}" for w in warnings]]
        return label_data("No verdict", {}), None, "\n\n".join(notes)
    sick, threshold = result["pneumonia_probability"], result["model"]["threshold"]
    verdict = label_data(result["label"], {"PNEUMONIA": sick, "NORMAL": 1 - sick})
    ranked = dict(sorted(result["probabilities"].items(), key=lambda item: -item[1]))
    breakdown = label_data(next(iter(ranked)), ranked)
    notes = [
        f"The model's estimate of the probability of pneumonia is **{sick:.0%}**; it answers PNEUMONIA "
        f"from {threshold:.0%}. The estimate is calibrated on the validation X-rays: of those that got "
        "an estimate like this one, about that share had pneumonia. It is a statistical estimate for "
        "X-rays like the training ones, not a diagnosis.",
        *[f"⚠️ {warning}" for warning in warnings],
    ]
    return verdict, breakdown, "\n\n".join(notes)


def build(loaded):
    with gr.Blocks(title="Pneumonia Detector", delete_cache=(300, 900)) as demo:
        gr.Markdown("# Pneumonia Detector\nUpload a frontal chest X-ray. The model estimates whether it shows "
                    "pneumonia, whether bacterial or viral, and highlights the areas it relied on.")
        gr.Markdown(DISCLAIMER)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Chest X-ray (JPEG, PNG, ...)", type="filepath", sources=["upload"],
                                 height=360, elem_id="xray")
                submit = gr.Button("Analyse", variant="primary")
                dicom = gr.File(label="…or a DICOM file (.dcm), analysed on upload", height=130)
            with gr.Column():
                verdict = gr.Label(label="Verdict (the model's estimate)", elem_id="verdict")
                breakdown = gr.Label(label="Normal / bacterial / viral (the model's estimates)",
                                     elem_id="breakdown")
                notes = gr.Markdown(elem_id="notes")
        heatmap = gr.Image(label="Grad-CAM: the areas that raised the model's pneumonia estimate", type="pil",
                           format="png", interactive=False, height=420, elem_id="heatmap")
        with gr.Accordion("Model", open=True):
            gr.Markdown(model_panel(loaded.identity), elem_id="model")
        with gr.Accordion("API result (JSON)", open=False):
            result = gr.JSON(label="result")

        outputs = [verdict, breakdown, notes, heatmap, result]
        image.upload(lambda: [None] * len(outputs), outputs=outputs, api_visibility="private", queue=False)
        for event, source, name in ((submit.click, image, "predict"), (dicom.upload, dicom, "predict_dicom")):
            event(predict, source, [result, heatmap], api_name=name, preprocess=False).success(
                show, result, [verdict, breakdown, notes], api_visibility="private", postprocess=False)
    return demo


LOADING.join()
MODEL = get_model()  # loaded once, before the first request; raises here if loading failed
analyse(Image.new("L", (64, 64), 128), MODEL)  # warm up: the runtime allocates its buffers now
demo = build(MODEL).queue(default_concurrency_limit=2, max_size=32)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the Pneumonia Detector on "
                                     "GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860).")
    parser.add_argument("--share", action="store_true", help="also ask for a public gradio.live link")
    share = parser.parse_args().share or os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true")
    demo.launch(share=share, max_file_size=MAX_FILE_BYTES, prevent_thread_lock=True)
    if share and not demo.share_url:
        print("No public link could be created (no internet?); serving locally only.", flush=True)
    demo.block_thread()
