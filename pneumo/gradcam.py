"""Grad-CAM: where in the X-ray the model found its evidence for pneumonia.

One forward and backward pass gives the probabilities, the map and the
features of the not-a-chest-X-ray check (pneumo/ood.py), so a heatmap costs
about one extra backward pass, not a second prediction.
"""

import numpy as np
import tensorflow as tf
from PIL import Image

from .classes import BACTERIAL, NORMAL, VIRAL

# Dark blue -> red -> yellow: hot areas stand out on a grey X-ray.
HEAT_COLOURS = np.array([[0, 0, 64], [0, 64, 255], [255, 0, 0], [255, 200, 0], [255, 255, 200]], dtype=np.float32)


class GradCam:
    def __init__(self, keras_model, layer_name):
        import keras

        self._model = keras.Model(keras_model.inputs, [keras_model.get_layer(layer_name).output, keras_model.output])
        self._run = tf.function(self._probabilities_and_maps, reduce_retracing=True)

    def __call__(self, inputs):
        """Model inputs (N, H, W, 3) -> (probabilities (N, 3), maps (N, h, w) in [0, 1],
        the layer's features averaged over space (N, channels), for pneumo/ood.py)."""
        probabilities, maps, pooled = self._run(tf.convert_to_tensor(inputs, tf.float32))
        return probabilities.numpy(), maps.numpy(), pooled.numpy()

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
        pooled = tf.reduce_mean(features, axis=(1, 2))
        return probabilities, tf.math.divide_no_nan(maps, peak), pooled


def overlay(image: Image.Image, heatmap: np.ndarray, max_side=512, strength=0.45) -> Image.Image:
    """The X-ray in grey with the heatmap blended over it, at most `max_side` px."""
    grey = image.convert("L")
    grey.thumbnail((max_side, max_side))
    heat = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(grey.size, Image.Resampling.BICUBIC)
    heat = np.asarray(heat, dtype=np.float32) / 255.0
    anchors = np.linspace(0, 1, len(HEAT_COLOURS))
    colours = np.stack([np.interp(heat, anchors, HEAT_COLOURS[:, c]) for c in range(3)], axis=-1)
    base = np.repeat(np.asarray(grey, dtype=np.float32)[..., None], 3, axis=-1)
    alpha = strength * heat[..., None]  # cold areas stay plain X-ray
    return Image.fromarray(np.uint8(base * (1 - alpha) + colours * alpha))
