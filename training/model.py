"""The classifier: a convolution base plus a small 3-way softmax head.

VGG16 partial transfer learning: the first `pretrained_blocks` blocks start
from pretrained weights, the later ones train from scratch; the first
`frozen_blocks` do not train at all. Keras 3 APIs only, so any backend runs it.
"""

import random
from pathlib import Path

import keras
import numpy as np

from pneumo.classes import CLASSES

from .pretrained import hed_layers, load_layers

ARCHITECTURES = ("vgg16", "mobilenetv2")
# The last convolution: where Grad-CAM looks.
GRADCAM_LAYERS = {"vgg16": "block5_conv3", "mobilenetv2": "out_relu"}


# MobileNetV2's layers after its last numbered block.
MOBILENET_TOP_LAYERS = {"Conv_1", "Conv_1_bn", "out_relu"}


def block_of(layer_name):
    """`block3_conv2` -> 3 (VGG16), `block_12_add` -> 12 (MobileNetV2), stem -> 0."""
    if layer_name in MOBILENET_TOP_LAYERS:
        return 17
    parts = layer_name.replace("block_", "block").split("_")[0]
    digits = parts[len("block"):] if parts.startswith("block") else ""
    return int(digits) if digits.isdigit() else 0


def pretrained_weights(architecture, source, image_size):
    """The named pretrained base's layers, by name, or {} for `none`
    (sources: training/pretrained.py)."""
    if source == "none":
        return {}
    if source == "hed":
        return hed_layers()
    if source.endswith(".npz"):
        if not Path(source).is_file():
            raise FileNotFoundError(f"pretrained weights file {source} does not exist")
        return load_layers(source)
    constructor = _constructor(architecture)
    if source == "imagenet":
        base = constructor(weights="imagenet", include_top=False, input_shape=(image_size, image_size, 3))
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(f"pretrained weights file {source} does not exist")
        base = constructor(weights=None, include_top=False, input_shape=(image_size, image_size, 3))
        base.load_weights(source)
    return {layer.name: layer.get_weights() for layer in base.layers if layer.weights}


def _constructor(architecture):
    if architecture == "vgg16":
        return keras.applications.VGG16
    if architecture == "mobilenetv2":
        return keras.applications.MobileNetV2
    raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")


def seed_everything(seed):
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)  # also seeds tf.random
        return
    # keras.utils.set_random_seed imports TensorFlow whenever it is installed,
    # only to seed it; Keras draws initializer and dropout seeds from `random`.
    random.seed(seed)
    np.random.seed(seed)


def build_model(
    architecture="vgg16",
    image_size=224,
    pretrained="imagenet",
    pretrained_blocks=5,
    frozen_blocks=0,
    dropout=0.3,
    seed=0,
):
    seed_everything(seed)
    shape = (image_size, image_size, 3)
    base = _constructor(architecture)(weights=None, include_top=False, input_shape=shape)
    weights = pretrained_weights(architecture, pretrained, image_size)
    for layer in base.layers:
        block = block_of(layer.name)
        if layer.name in weights and block <= pretrained_blocks:
            layer.set_weights(weights[layer.name])
        layer.trainable = block > frozen_blocks
    features = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(features)
    return keras.Model(base.input, outputs, name=f"pneumo_{architecture}")


def compile_model(model, learning_rate=1e-4, decay=1e-5):
    # Keras 3 optimizers have no `decay`: this schedule is the legacy
    # lr / (1 + decay * step) it stood for.
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
