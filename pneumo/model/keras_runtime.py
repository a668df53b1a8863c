"""The Keras runtime (PNEUMO_RUNTIME=keras): model.keras in TensorFlow.

The reference the ONNX models are checked against, and the fallback for a
run folder without them. Importing this module imports TensorFlow.
"""

import keras
import numpy as np

from pneumo.model.run_folder import KERAS_MODEL
from pneumo.model.runtime_names import KERAS


class KerasRuntime:
    name = KERAS

    def __init__(self, folder, config):
        model = keras.saving.load_model(folder / KERAS_MODEL, compile=False)
        self.model = model
        # One forward pass gives both: the maps of the heatmap layer and the probabilities.
        self._both = keras.Model(model.inputs, [model.get_layer(config["gradcam_layer"]).output, model.output])
        self.head_kernel = np.asarray(model.layers[-1].kernel, np.float32)  # the dense head, (C, 3)
        self.channels = int(self._both.outputs[0].shape[-1])

    def __call__(self, inputs):
        """Model inputs (N, H, W, 3) -> (raw probabilities (N, 3), maps (N, h, w, C))."""
        maps, raw = self._both.predict_on_batch(np.asarray(inputs, np.float32))
        return np.asarray(raw), np.asarray(maps)
