"""The runtimes' names and the error they share.

pneumo/runtime.py chooses a runtime; pneumo/runtime_onnx.py and
pneumo/runtime_keras.py are the runtimes. Both sides take these from here,
so that a runtime never imports the module that imports it.
"""

AUTO, ONNX_INT8, ONNX_FLOAT, KERAS = "auto", "onnx-int8", "onnx-float", "keras"
RUNTIMES = (AUTO, ONNX_INT8, ONNX_FLOAT, KERAS)


class UnusableRuntime(Exception):
    """This runtime cannot serve this run folder; the message says why."""
