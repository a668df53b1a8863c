"""The classifier: a convolution base plus a small 3-way softmax head.

VGG16 partial transfer learning: the first `pretrained_blocks` blocks start
from pretrained weights, the later ones train from scratch; the first
`frozen_blocks` do not train at all. Keras 3 APIs only, so any backend runs it.

A joint run (training/children/joint.py) adds a second output, `adult`: P(pneumonia)
of an adult film, a logistic read-out of the log of each heatmap-layer map's
mean and maximum. That is exactly the read-out pneumo/answers/adult.py serves from
the maps every pass computes anyway, so the served model keeps one output
(`served_model`) and adults cost no second pass.
"""

import random
from pathlib import Path

import keras
import numpy as np

from pneumo.answers.adult import AdultHead
from pneumo.answers.classes import CLASSES
from pneumo.model.run_folder import KERAS_MODEL

from training.children.pretrained import hed_layers, load_layers

ARCHITECTURES = ("vgg16", "mobilenetv2")
# The last convolution: where Grad-CAM looks.
GRADCAM_LAYERS = {"vgg16": "block5_conv3", "mobilenetv2": "out_relu"}


CHILD_OUTPUT, ADULT_OUTPUT = "predictions", "adult"
ADULT_FEATURES = "adult_features"  # the layer the adult output reads

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
    (sources: training/children/pretrained.py)."""
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
    if is_joint(model):  # each output's loss counts only its own population (training/children/joint.py's weights)
        loss = {CHILD_OUTPUT: "sparse_categorical_crossentropy", ADULT_OUTPUT: "binary_crossentropy"}
        metrics = {CHILD_OUTPUT: ["accuracy"]}
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=metrics)
    return model


@keras.saving.register_keras_serializable(package="pneumo")
class LogMeanAndMax(keras.layers.Layer):
    """(N, h, w, C) maps -> (N, 2C): log1p of each channel's mean and maximum over the film
    (pneumo.answers.adult.adult_features, then the log that AdultHead.score takes)."""

    def call(self, maps):
        pooled = keras.ops.concatenate([keras.ops.mean(maps, axis=(1, 2)), keras.ops.max(maps, axis=(1, 2))], axis=-1)
        return keras.ops.log1p(keras.ops.relu(pooled))


def with_adult_head(model, architecture="vgg16", dropout=0.3):
    """The children's model plus the `adult` output, read from the heatmap layer's maps."""
    maps = model.get_layer(GRADCAM_LAYERS[architecture]).output
    features = LogMeanAndMax(name=ADULT_FEATURES)(maps)
    features = keras.layers.Dropout(dropout, name="adult_dropout")(features)
    adult = keras.layers.Dense(1, activation="sigmoid", name=ADULT_OUTPUT)(features)
    return keras.Model(model.input, {CHILD_OUTPUT: model.get_layer(CHILD_OUTPUT).output, ADULT_OUTPUT: adult},
                       name=model.name)


def is_joint(model) -> bool:
    return any(layer.name == ADULT_OUTPUT for layer in model.layers)


def served_model(model):
    """What serves: the children's output alone (the adult read-out is served from the maps)."""
    if not is_joint(model):
        return model
    return keras.Model(model.input, model.get_layer(CHILD_OUTPUT).output, name=model.name)


def trained_adult_head(model):
    """The joint model's adult output as pneumo.answers.adult.AdultHead: not yet calibrated, not shipped
    (training/adults/answer.py calibrates it and judges the rule on the held-out patients)."""
    kernel, bias = model.get_layer(ADULT_OUTPUT).get_weights()
    return AdultHead.read_out(kernel[:, 0], bias[0])


def start_from(model, source) -> int:
    """Copy the weights of every layer of the model saved at `source` (a run folder or a .keras file)
    that has a layer of the same name and shapes here. Returns how many layers were copied."""
    path = Path(source)
    if path.is_dir():
        path = path / KERAS_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"--init-from: no model at {path}")
    donor = {layer.name: layer for layer in keras.saving.load_model(path, compile=False).layers}
    copied = 0
    for layer in model.layers:
        other = donor.get(layer.name)
        if other is not None and layer.weights and \
                [w.shape for w in layer.get_weights()] == [w.shape for w in other.get_weights()]:
            layer.set_weights(other.get_weights())
            copied += 1
    return copied
