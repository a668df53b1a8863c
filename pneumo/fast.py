"""The fast CPU path: the int8 ONNX model, for probabilities without a heatmap.

`python -m training.quantize` writes model.int8.onnx and int8.json into a
run folder. PNEUMO_RUNTIME chooses what computes the probabilities:

    auto   (default) the int8 model when the run folder has one made from
           this very model.keras and onnxruntime imports; else Keras
    keras  always Keras
    int8   the int8 model, or an error saying why not

Grad-CAM always runs on the Keras model: it needs gradients.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("pneumo")

RUNTIME_ENV = "PNEUMO_RUNTIME"
RUNTIMES = ("auto", "keras", "int8")
INT8_FILE = "model.int8.onnx"
INT8_REPORT = "int8.json"
THREADS_ENV = "PNEUMO_ONNX_THREADS"  # onnxruntime threads; default: the CPUs this process may use


class OnnxModel:
    """An onnxruntime session: float32 model inputs (N, H, W, 3) -> raw probabilities (N, 3)."""

    def __init__(self, path, threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or int(os.environ.get(THREADS_ENV) or 0) or _cpus()
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: the process also runs TensorFlow
        # (Grad-CAM) and a web server on the same few cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        self.path = Path(path)
        # `features` (N, channels): the Grad-CAM layer's maps averaged over space,
        # for the not-a-chest-X-ray check (pneumo/ood.py); absent from older files.
        self.has_features = "features" in self._outputs

    def run(self, inputs) -> dict:
        """Model inputs -> {"probabilities": raw (N, 3), and "features" when the model has them}."""
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        return dict(zip(self._outputs, self._session.run(self._outputs, {self._input: inputs})))

    def __call__(self, inputs):
        return self.run(inputs)["probabilities"]


def runtime_choice():
    choice = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    if choice not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={choice!r}: choose one of {', '.join(RUNTIMES)}")
    return choice


def load_fast(folder, keras_sha256):
    """The int8 model of the run folder, or None for Keras (see the module docstring)."""
    choice = runtime_choice()
    if choice == "keras":
        return None
    reason = _unusable(Path(folder), keras_sha256)
    if reason is None:
        try:
            model = OnnxModel(Path(folder) / INT8_FILE)
            log.info("probabilities without heatmap from %s", model.path)
            return model
        except Exception as error:  # a broken or foreign file must not stop serving
            reason = f"{INT8_FILE} could not be loaded: {error}"
    if choice == "int8":
        raise RuntimeError(f"{RUNTIME_ENV}=int8 but {reason}")
    log.debug("Keras computes all probabilities: %s", reason)
    return None


def _unusable(folder, keras_sha256):
    """Why the int8 model cannot stand in for model.keras, or None."""
    if not (folder / INT8_FILE).is_file():
        return f"{folder} has no {INT8_FILE}"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    try:
        made_from = json.loads((folder / INT8_REPORT).read_text()).get("keras_sha256")
    except (OSError, ValueError):
        return f"{folder} has no readable {INT8_REPORT}"
    if made_from != keras_sha256:
        return f"{INT8_FILE} was made from another model.keras (retrained since?)"
    return None


def _cpus():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
