"""The ONNX Runtime runtimes: onnx-int8 and onnx-float (see pneumo/model/runtime.py).

Both files come from training/deploy/quantize.py (also run by the training report)
and describe themselves in their metadata: the sha256 of the model.keras
they were made from (a file left over from an earlier training run is never
served) and the dense head's kernel (for pneumo/model/heatmap.py).

model.int8.onnx is complete. model.float.onnx is the float graph without its
weights; `float_model` fills them in from model.keras, so the run folder
holds the float weights once.

Both may also output `shared`, the maps of the first blocks that the
children's model shares with the adult trunk (pneumo/model/one_pass.py).

adult_trunk.int8.onnx (training/adults/trunk.py), the adult answer's own
frozen convolutions, runs here too, under every runtime: it ships as int8
only (its float weights are the pretrained file's, not the run's). Either it
reads the film itself, or, as a branch, it continues the runtime's pass from
its `shared` maps.
"""

import io
import json
import os
import threading
import zipfile

import numpy as np

from pneumo.model.cpu import has_vnni
from pneumo.model.one_pass import ContinuedTrunk, mismatch
from pneumo.model.run_folder import (ADULT_TRUNK, FLOAT_ONNX, INT8_ONNX, KERAS_MODEL, KERAS_WEIGHTS_MEMBER, META_ADULT_TRUNK,
                         META_HEAD_KERNEL, META_KERAS_SHA256, META_SHARED, META_WEIGHTS, ONNX_INPUT, ONNX_MAPS,
                         ONNX_PROBABILITIES, ONNX_SHARED)
from pneumo.model.runtime_names import ONNX_FLOAT, ONNX_INT8, UnusableRuntime
from pneumo.settings import setting

THREADS_ENV = "PNEUMO_ONNX_THREADS"  # onnxruntime threads; default: the CPUs this process may use
FILES = {ONNX_INT8: INT8_ONNX, ONNX_FLOAT: FLOAT_ONNX}


class OnnxRuntimeModel:
    """An onnxruntime session: model inputs (N, H, W, 3) -> (raw probabilities (N, 3), maps (N, h, w, C));
    `run` adds the shared maps (None without them; `shared` describes them, pneumo/model/one_pass.py)."""

    def __init__(self, model, name, threads=None):
        """`model`: a path or the serialized ONNX model."""
        self._session = session(model, threads)
        self.name = name
        self.metadata = self._session.get_modelmeta().custom_metadata_map
        outputs = {output.name: output for output in self._session.get_outputs()}
        if ONNX_MAPS not in outputs or META_HEAD_KERNEL not in self.metadata:
            raise UnusableRuntime("it was made by an older pneumo, without the heatmap's maps: "
                                  "rebuild it with python -m training.deploy.quantize RUN_FOLDER")
        self.channels = int(outputs[ONNX_MAPS].shape[-1])
        self.head_kernel = np.asarray(json.loads(self.metadata[META_HEAD_KERNEL]), np.float32)
        has_shared = ONNX_SHARED in outputs and META_SHARED in self.metadata
        self.shared = json.loads(self.metadata[META_SHARED]) if has_shared else None
        self._outputs = [ONNX_PROBABILITIES, ONNX_MAPS] + ([ONNX_SHARED] if has_shared else [])

    def __call__(self, inputs):
        return self.run(inputs)[:2]

    def run(self, inputs):
        """One pass: (raw probabilities, maps, shared maps or None)."""
        found = self._session.run(self._outputs, {ONNX_INPUT: np.ascontiguousarray(inputs, dtype=np.float32)})
        return found[0], found[1], (found[2] if len(found) > 2 else None)


class OnnxMaps:
    """The adult trunk (training/adults/trunk.py): model inputs (N, S, S, 3) -> its maps (N, h, w, C);
    a branch (`continues` a layer) takes that layer's maps instead. `image_size` (S), `layer`
    and `weights` say what it is, from its metadata (`description`)."""

    def __init__(self, model, threads=None):
        self._session = session(model, threads)
        self.description = json.loads(self._session.get_modelmeta().custom_metadata_map[META_ADULT_TRUNK])
        self.image_size, self.layer = int(self.description["image_size"]), self.description["layer"]
        self.weights = self.description["weights"]
        self.continues = self.description.get("continues")
        self.channels = int(self._session.get_outputs()[0].shape[-1])

    def __call__(self, inputs):
        return self._session.run([ONNX_MAPS], {ONNX_INPUT: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def load_adult_trunk(folder, runtime=None):
    """The run folder's adult trunk, or None without one; a branch continues `runtime`'s pass
    (pneumo/model/one_pass.py). ValueError says why a file cannot serve."""
    path = folder / ADULT_TRUNK
    if not path.is_file():
        return None
    try:
        trunk = OnnxMaps(path, setting(THREADS_ENV))
    except Exception as error:  # a broken or foreign file: adults then get no verdict, serving goes on
        raise ValueError(f"{path.name} could not be loaded: {error}") from None
    if not trunk.continues:
        return trunk
    reason = mismatch(getattr(runtime, "shared", None), trunk.description)
    if reason:
        raise ValueError(f"{path.name} cannot serve: {reason}")
    return ContinuedTrunk(runtime, trunk)


def session(model, threads=None):
    """An onnxruntime CPU session for `model` (a path or the serialized model), set up to share the machine,
    that runs one pass at a time (`OnePassAtATime`)."""
    import onnxruntime as ort

    return OnePassAtATime(ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                               session_options(threads), providers=["CPUExecutionProvider"]))


class OnePassAtATime:
    """An onnxruntime session whose `run` takes one call at a time; otherwise the session itself.

    Each pass already uses every core it may (intra-op threads), so passes side by side only share them,
    and each holds its own activations in the session's memory arena, which keeps what it once held.
    Four threads through 80 val/ films, as the app's four requests at a time (in process, 2-core Xeon):
    peak RSS 395 MB instead of 429-442, requests/s no lower (10.6-12.3 against 10.7-11.4)."""

    def __init__(self, inference_session):
        self._session, self._lock = inference_session, threading.Lock()

    def run(self, *args, **kwargs):
        with self._lock:
            return self._session.run(*args, **kwargs)

    def __getattr__(self, name):  # inputs, outputs, metadata, options: the session's own
        if name.startswith("_"):  # never its privates (nor a loop while a copy has no _session yet)
            raise AttributeError(name)
        return getattr(self._session, name)


def session_options(threads=None):
    """The options of every session: `threads` intra-op threads (default PNEUMO_ONNX_THREADS, else every
    CPU this process may use), idle threads asleep, int8 sums exact on every CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or setting(THREADS_ENV) or _cpus()
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: the web server and its other
    # requests share the same few cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not has_vnni():
        # Without VNNI, ONNX Runtime's int8 kernels may saturate 16-bit sums (val/ accuracy 0.875 instead
        # of 0.924 on an AVX2 CPU); this keeps them exact, so int8 computes the same on every CPU. VNNI sums
        # in 32 bits by itself, and there the option only costs: on the 2-core Xeon (avx512_vnni) it made
        # the int8 pass 3.7x slower (75 ms against 20, under load), the adult trunk's 3x, and each int8
        # session 20 MB larger, for the same bits (every result, heatmap and overlay of 304 val/ and 60
        # NIH films identical).
        options.add_session_config_entry("session.x64quantprecision", "1")
    return options


def load_onnx(name, folder, keras_sha256):
    """The run folder's ONNX model for runtime `name`; UnusableRuntime says why not."""
    path = folder / FILES[name]
    if not path.is_file():
        raise UnusableRuntime(f"{folder} has no {path.name} (make it with python -m training.deploy.quantize {folder})")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UnusableRuntime("onnxruntime is not installed") from None
    threads = setting(THREADS_ENV)  # read outside the try below: a malformed value is an error, never a fallback
    try:
        model = OnnxRuntimeModel(path if name == ONNX_INT8 else float_model(path, folder / KERAS_MODEL), name,
                                 threads)
    except UnusableRuntime as error:
        raise UnusableRuntime(f"{path.name}: {error}") from None
    except Exception as error:  # a broken or foreign file must not stop serving
        raise UnusableRuntime(f"{path.name} could not be loaded: {error}") from None
    if model.metadata.get(META_KERAS_SHA256) != keras_sha256:
        raise UnusableRuntime(f"{path.name} was made from another {KERAS_MODEL} (retrained since?)")
    return model


def float_model(graph_path, keras_path) -> bytes:
    """model.float.onnx with its weights from model.keras: a complete float32 ONNX model."""
    import h5py
    import onnx

    graph = onnx.load(str(graph_path))
    sources = json.loads({p.key: p.value for p in graph.metadata_props}[META_WEIGHTS])
    with zipfile.ZipFile(keras_path) as archive:
        weights = archive.read(KERAS_WEIGHTS_MEMBER)
    with h5py.File(io.BytesIO(weights), "r") as h5:
        for initializer in graph.graph.initializer:
            if initializer.name in sources:
                dataset, axes = sources[initializer.name]
                array = np.ascontiguousarray(h5[dataset][()].astype(np.float32).transpose(axes))
                if list(array.shape) != list(initializer.dims):
                    raise ValueError(f"{dataset} in {keras_path.name} has shape {array.shape}, "
                                     f"the graph wants {list(initializer.dims)}")
                initializer.raw_data = array.tobytes()
    return graph.SerializeToString()


def _cpus():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
