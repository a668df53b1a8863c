"""The runtimes' names and the error they share.

pneumo/model/runtime.py chooses a runtime; pneumo/model/onnx_runtime.py and
pneumo/model/keras_runtime.py are the runtimes. Both sides take these from here,
so that a runtime never imports the module that imports it.
"""

AUTO, ONNX_INT8, ONNX_FLOAT, KERAS = "auto", "onnx-int8", "onnx-float", "keras"
RUNTIMES = (AUTO, ONNX_INT8, ONNX_FLOAT, KERAS)


class UnusableRuntime(Exception):
    """This runtime cannot serve this run folder; the message says why."""
