"""Which runtime computes the model's outputs, chosen once at load.

PNEUMO_RUNTIME:

    auto        (default) onnx-int8 on a CPU with VNNI, else onnx-float;
                keras when the run folder has no usable ONNX model
    onnx-int8   model.int8.onnx: int8 weights and activations
    onnx-float  model.float.onnx: the float model in ONNX Runtime, its
                weights read from model.keras (float16 storage, float32 compute)
    keras       TensorFlow and Keras, imported only for this runtime; not
                installed by `pip install .` (the `keras` extra brings them)

Without VNNI (pneumo/model/cpu.py) int8 convolutions run slower than float
ones or, on some kernels, lose accuracy to overflow, so `auto` takes int8
only where the CPU says it has them.

Every runtime is a callable: model inputs (N, H, W, 3) -> (raw probabilities
(N, 3), the heatmap layer's maps (N, h, w, C)), with `name`, `channels` (C)
and `head_kernel` (C, 3), the dense head's kernel that pneumo/model/heatmap.py needs.
"""

import logging
from pathlib import Path

from pneumo import install_hint
from pneumo.model.cpu import has_vnni
from pneumo.model.runtime_names import AUTO, KERAS, ONNX_FLOAT, ONNX_INT8, UnusableRuntime
from pneumo.settings import setting

log = logging.getLogger("pneumo")

RUNTIME_ENV = "PNEUMO_RUNTIME"


def runtime_choice() -> str:
    """PNEUMO_RUNTIME, checked (pneumo/settings.py raises SettingError, a ValueError, naming it)."""
    return setting(RUNTIME_ENV)


def candidates(choice, flags=None) -> list[str]:
    """The runtimes to try, in order, for a PNEUMO_RUNTIME choice."""
    if choice != AUTO:
        return [choice]
    if has_vnni(flags):
        return [ONNX_INT8, ONNX_FLOAT, KERAS]
    log.info("this CPU has no VNNI: int8 would be slower or less exact here, so it is not used")
    return [ONNX_FLOAT, KERAS]


def load_runtime(folder, config, keras_sha256, choice=None, flags=None):
    """The first runtime of `candidates` that can serve the run folder.

    An explicit choice that cannot serve raises RuntimeError with the reason;
    `auto` logs why it passed over one and tries the next."""
    choice = choice or runtime_choice()
    reasons = []
    for name in candidates(choice, flags):
        try:
            runtime = _load(name, Path(folder), config, keras_sha256)
        except UnusableRuntime as error:
            if choice != AUTO:
                raise RuntimeError(f"{RUNTIME_ENV}={choice} but {error}") from None
            reasons.append(f"{name}: {error}")
            continue
        if reasons:
            log.warning("serving with %s (%s)", name, "; ".join(reasons))
        return runtime
    raise RuntimeError("no runtime can serve this run folder: " + "; ".join(reasons))


def _load(name, folder, config, keras_sha256):
    if name == KERAS:
        try:
            from pneumo.model.keras_runtime import KerasRuntime  # the only way TensorFlow gets imported
        except ModuleNotFoundError as error:  # `pip install .` serves on ONNX Runtime alone
            raise UnusableRuntime(f"the keras runtime needs TensorFlow and Keras ({error.name} is not installed): "
                                  + install_hint("keras")) from None

        return KerasRuntime(folder, config)
    from pneumo.model.onnx_runtime import load_onnx

    return load_onnx(name, folder, keras_sha256)
