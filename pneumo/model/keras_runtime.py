"""The Keras runtime (PNEUMO_RUNTIME=keras): model.keras in TensorFlow.

The reference the ONNX models are checked against, and the fallback for a
run folder without them. Importing this module imports TensorFlow.
"""

import keras
import numpy as np

from pneumo.model.one_pass import SHARED_LAYER, description
from pneumo.model.run_folder import KERAS_MODEL
from pneumo.model.runtime_names import KERAS


class KerasRuntime:
    name = KERAS

    def __init__(self, folder, config):
        model = keras.saving.load_model(folder / KERAS_MODEL, compile=False)
        self.model = model
        # One forward pass gives all: the maps of the heatmap layer, the probabilities and the
        # maps the adult trunk may continue from (pneumo/model/one_pass.py).
        outputs = [model.get_layer(config["gradcam_layer"]).output, model.output]
        names = {layer.name for layer in model.layers}
        self.shared = None
        if SHARED_LAYER in names:
            outputs.append(model.get_layer(SHARED_LAYER).output)
            weights = {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
            self.shared = description(weights, config["image_size"])
        self._all = keras.Model(model.inputs, outputs)
        self.head_kernel = np.asarray(model.layers[-1].kernel, np.float32)  # the dense head, (C, 3)
        self.channels = int(self._all.outputs[0].shape[-1])

    def __call__(self, inputs):
        """Model inputs (N, H, W, 3) -> (raw probabilities (N, 3), maps (N, h, w, C))."""
        return self.run(inputs)[:2]

    def run(self, inputs):
        """One pass: (raw probabilities, maps, shared maps or None)."""
        found = self._all.predict_on_batch(np.asarray(inputs, np.float32))
        return np.asarray(found[1]), np.asarray(found[0]), (np.asarray(found[2]) if len(found) > 2 else None)
