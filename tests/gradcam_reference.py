"""Grad-CAM by TensorFlow's GradientTape: the reference for pneumo/model/heatmap.py.

This is the Grad-CAM that pneumo served before its heatmap came from the
maps and the head's kernel in numpy; tests/test_heatmap.py proves the two equal.
"""

import keras
import tensorflow as tf

from pneumo.answers.classes import BACTERIAL, NORMAL, VIRAL


class GradCam:
    def __init__(self, keras_model, layer_name):
        self._model = keras.Model(keras_model.inputs, [keras_model.get_layer(layer_name).output, keras_model.output])
        self._run = tf.function(self._probabilities_and_maps, reduce_retracing=True)

    def __call__(self, inputs):
        """Model inputs (N, H, W, 3) -> (probabilities (N, 3), maps (N, h, w) in [0, 1])."""
        probabilities, maps = self._run(tf.convert_to_tensor(inputs, tf.float32))
        return probabilities.numpy(), maps.numpy()

    def _probabilities_and_maps(self, inputs):
        with tf.GradientTape() as tape:
            features, probabilities = self._model(inputs, training=False)
            # Log-odds of pneumonia: unlike a probability near 1 it does not
            # saturate, so confident cases still get a map.
            sick = probabilities[:, BACTERIAL] + probabilities[:, VIRAL]
            log_odds = tf.math.log(sick + 1e-7) - tf.math.log(probabilities[:, NORMAL] + 1e-7)
        gradients = tape.gradient(log_odds, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
        return probabilities, tf.math.divide_no_nan(maps, peak)
