"""Train the lung-and-heart segmenter (a small U-Net) on JSRT films with the SCR masks:

    python -m training.anatomy.segmenter OUT_DIR --data ../shared/data/lung_masks
           [--size N] [--epochs N] [--folds 5 --fold K] [--time-epoch]

writes into OUT_DIR

    checkpoint.keras, state.json   after every epoch: a killed run started again resumes there
    history.csv                    loss and held-out Dice per epoch
    model.keras                    the model after the last epoch
    anatomy.onnx                   float32 ONNX (input `image` (N, S, S, 1) 0-1, output
                                   `probabilities` (N, S, S, 4)), batch dimension dynamic;
                                   int8 (dynamic quantisation) only when the float file is
                                   over --max-bytes
    anatomy.json                   input size, parameters, classes, held-out films, held-out Dice
                                   per structure (through pneumo/anatomy/segmenter.py, as served),
                                   epochs, training time, credits

Held-out films: the films of labels.csv sorted by file name, every --folds-th one starting at
--fold (default: fold 4 of 5, i.e. the 5th, 10th, ... film: 49 films; JSRT has one film per
patient). The shipped model is the last epoch's (a cosine learning-rate schedule), not the best
epoch on the held-out films: those are for reporting, not for choosing.

Input: the film squashed to S x S (aspect not kept), grey, scaled to 0-1 by its own 1st-99th
percentiles (pneumo/anatomy/segmenter.py). Classes: background, the patient's right lung (the
image's left), the patient's left lung, the heart. Loss: cross-entropy + soft Dice.

Augmentation (imgaug, masks moved with the films) for what JSRT lacks: children (zoomed out,
other aspect ratios, dark/bright/body-like margins), portable AP films (rotation, low contrast,
haze, shifted framing), other machines (gamma, contrast, CLAHE, noise, blur, lost resolution,
JPEG), phone photos of films (perspective, vignetting, glare, moire, blur), lungs whitened by
consolidation (soft bright blobs pasted inside the lung masks, masks unchanged), burnt-in text
and markers, mirrored films (lung labels follow the image side), and a few non-films (flat,
noise, smooth fields) with no anatomy at all.

The model uses keras.ops only, so it also trains under KERAS_BACKEND=jax (the ONNX export
needs TensorFlow: elsewhere it tries keras's own ONNX export).

Credits: JSRT database, Shiraishi et al., AJR 2000; SCR masks, van Ginneken, Stegmann and
Loog, Medical Image Analysis 2006.
"""

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from pneumo.model.run_folder import KERAS_MODEL
from pneumo.anatomy.segmenter import (CLASSES, INFO_FILE, INPUT_NAME, MODEL_FILE, OUTPUT_NAME, Segmenter,
                                      normalised, squashed)

DEFAULT_SIZE = 192
DEFAULT_EPOCHS = 30
FILTERS = (16, 24, 40, 56, 72)  # per resolution level: 4 poolings, the last entry is the bottleneck
BATCH = 8
REPEATS = 2  # each training film is seen this many times (differently augmented) per epoch
LEARNING_RATE = 3e-3
FOLDS, SHIPPED_FOLD = 5, 4
MAX_BYTES = 1_500_000  # the float ONNX file should stay under this; over it, int8 is tried
ONNX_OPSET = 17
CREDITS = ("JSRT database: Shiraishi J, Katsuragawa S, Ikezoe J, et al. Development of a digital image database "
           "for chest radiographs with and without a lung nodule. AJR 2000;174:71-74. "
           "SCR masks: van Ginneken B, Stegmann MB, Loog M. Segmentation of anatomical structures in chest "
           "radiographs using supervised methods: a comparative study on a public database. "
           "Medical Image Analysis 2006;10(1):19-40.")
NAMES = ("right lung", "left lung", "heart")


# ---------------------------------------------------------------- data

def film_names(data) -> list[str]:
    """labels.csv's files with all three structures drawn, sorted by file name."""
    with open(Path(data) / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return sorted(r["file"] for r in rows if all(p in r["parts"] for p in ("right_lung", "left_lung", "heart")))


def split(names, folds=FOLDS, fold=SHIPPED_FOLD):
    """(training films, held-out films): every folds-th film from index `fold` is held out."""
    held = set(names[fold::folds])
    return [n for n in names if n not in held], [n for n in names if n in held]


def load_film(data, name, size):
    """(image uint8 (S, S), mask uint8 (S, S)): the film squashed as served, the mask by nearest neighbour."""
    data = Path(data)
    with Image.open(data / "images" / name) as image:
        grey = squashed(image, size)
    with Image.open(data / "masks" / name) as mask:
        labels = np.asarray(mask.resize((size, size), Image.NEAREST), dtype=np.uint8)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8), labels


def load_films(data, names, size):
    pairs = [load_film(data, n, size) for n in names]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def dice_scores(labels: np.ndarray, truth: np.ndarray) -> dict:
    """Per structure (and both lungs) Dice of integer label maps (N, S, S): per film, as lists."""
    out = {}
    for key, classes in (("right", (1,)), ("left", (2,)), ("lungs", (1, 2)), ("heart", (3,))):
        p, t = np.isin(labels, classes), np.isin(truth, classes)
        inter = (p & t).sum(axis=(1, 2))
        total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
        out[key] = [float(2 * i / s) if s else 1.0 for i, s in zip(inter, total)]
    return out


# ---------------------------------------------------------------- augmentation

def _smooth_field(rng, shape, sigma):
    """Random smooth field scaled to 0-1."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def zoom_out(image, mask, rng):
    """A child's film: the chest smaller in the frame (aspect ratio changed too), margins dark, bright or
    body-like (soft tissue, arms at the sides, abdomen below)."""
    s = image.shape[0]
    scale = rng.uniform(0.5, 0.92)
    aspect = math.exp(rng.uniform(-0.25, 0.25))
    h, w = min(s, int(round(s * scale * aspect ** 0.5))), min(s, int(round(s * scale / aspect ** 0.5)))
    small = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    kind = rng.choice(["dark", "bright", "body", "body"])
    if kind == "dark":
        canvas = np.full((s, s), rng.uniform(0, 40), np.float32)
    elif kind == "bright":
        canvas = np.full((s, s), rng.uniform(190, 255), np.float32)
    else:
        level = float(np.percentile(image, rng.uniform(40, 80)))
        canvas = level + (_smooth_field(rng, (s, s), s / 12) - 0.5) * rng.uniform(20, 80)
        if rng.random() < 0.6:  # arms: bright soft bands along the sides
            x = np.arange(s)[None, :]
            for centre in (rng.uniform(0, 0.12) * s, (1 - rng.uniform(0, 0.12)) * s):
                canvas += rng.uniform(20, 90) * np.exp(-0.5 * ((x - centre) / (s * rng.uniform(0.03, 0.08))) ** 2)
        if rng.random() < 0.3:  # bowel gas below
            gas = _smooth_field(rng, (s, s), s / 40) > 0.7
            canvas[gas] -= rng.uniform(20, 60)
    top, left = rng.integers(0, s - h + 1), rng.integers(0, s - w + 1)
    out_mask = np.zeros_like(mask)
    canvas[top:top + h, left:left + w] = small
    out_mask[top:top + h, left:left + w] = small_mask
    # a soft seam instead of a hard frame edge, sometimes
    if kind == "body" and rng.random() < 0.7:
        seam = np.zeros((s, s), np.float32)
        seam[top:top + h, left:left + w] = 1
        seam = ndimage.gaussian_filter(seam, s / 60)
        blurred = ndimage.gaussian_filter(canvas, 2)
        canvas = seam * canvas + (1 - seam) * blurred
    return np.clip(canvas, 0, 255).astype(np.uint8), out_mask


def consolidation(image, mask, rng):
    """Lungs whitened by pneumonia: soft bright blobs pasted inside the lung masks (masks unchanged),
    up to the mediastinum's brightness, sometimes filling most of a lung, sometimes an effusion from below."""
    out = image.astype(np.float32)
    s = image.shape[0]
    heart = mask == 3
    target = float(np.percentile(out[heart], rng.uniform(50, 95))) if heart.any() else float(np.percentile(out, 90))
    lungs = [k for k in (1, 2) if (mask == k).any()]
    if not lungs:
        return image
    chosen = lungs if rng.random() < 0.3 else [lungs[rng.integers(len(lungs))]]
    for k in chosen:
        lung = mask == k
        inside = ndimage.gaussian_filter(lung.astype(np.float32), 1.5)
        kind = rng.random()
        strength = rng.uniform(0.35, 1.0)
        if kind < 0.35:  # most of the lung, or all of it
            blob = ndimage.gaussian_filter(ndimage.binary_erosion(lung, iterations=int(rng.integers(0, 4)))
                                           .astype(np.float32), s / 60)
            blob *= 0.75 + 0.25 * _smooth_field(rng, (s, s), s / 20)
            strength = rng.uniform(0.6, 1.0)
        elif kind < 0.5:  # effusion: from the base up to a meniscus
            rows = np.flatnonzero(lung.any(axis=1))
            level = rows[0] + (rows[-1] - rows[0]) * rng.uniform(0.45, 0.9)
            y, x = np.mgrid[0:s, 0:s]
            cols = np.flatnonzero(lung.any(axis=0))
            outer = cols[0] if k == 1 else cols[-1]  # the meniscus climbs towards the chest wall
            meniscus = level - rng.uniform(0, 0.15) * (rows[-1] - rows[0]) * np.exp(-np.abs(x - outer) / (s * 0.05))
            blob = ndimage.gaussian_filter((y > meniscus).astype(np.float32), s / 80)
        else:  # one to three random smooth shapes
            blob = np.zeros((s, s), np.float32)
            ys, xs = np.nonzero(lung)
            for _ in range(int(rng.integers(1, 4))):
                i = rng.integers(len(ys))
                radius = s * rng.uniform(0.04, 0.14)
                y, x = np.mgrid[0:s, 0:s]
                stretch = rng.uniform(0.6, 1.6)
                window = np.exp(-0.5 * (((y - ys[i]) / radius) ** 2 + ((x - xs[i]) / (radius * stretch)) ** 2))
                shape = (_smooth_field(rng, (s, s), s / 30) * 0.6 + window) > rng.uniform(0.7, 1.0)
                blob = np.maximum(blob, ndimage.gaussian_filter(shape.astype(np.float32), s / rng.uniform(60, 150)))
        weight = np.clip(blob * inside * strength, 0, 1)
        texture = (_smooth_field(rng, (s, s), 2) - 0.5) * rng.uniform(0, 25)  # airspace mottling
        out = out + weight * (np.maximum(target - out, 0) + texture)
    return np.clip(out, 0, 255).astype(np.uint8)


_FONTS = {}


def _font(size):
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def burnt_in_text(image, rng):
    """Markers and text burnt into the film: L/R letters, PORTABLE, dates, small boxes; bright or dark."""
    s = image.shape[0]
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    words = ["R", "L", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", "SITTING", "12/03/19", "14:22", "LT", "RT", "x1"]
    for _ in range(int(rng.integers(1, 4))):
        fill = int(rng.integers(200, 256)) if rng.random() < 0.8 else int(rng.integers(0, 40))
        x, y = int(rng.integers(0, s - 20)), int(rng.integers(0, s - 12))
        if rng.random() < 0.3:
            w, h = int(rng.integers(6, 30)), int(rng.integers(6, 30))
            draw.rectangle([x, y, x + w, y + h], outline=fill, fill=fill if rng.random() < 0.5 else None)
        else:
            draw.text((x, y), str(rng.choice(words)), fill=fill, font=_font(int(rng.integers(8, 28))))
    return np.asarray(picture)


def photo_effects(image, rng):
    """A phone photo of a film on a light box: vignetting, a glare gradient, moire, a slight blur."""
    s = image.shape[0]
    out = image.astype(np.float32)
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / s
    if rng.random() < 0.7:  # vignetting
        cy, cx = rng.uniform(0.3, 0.7, 2)
        r2 = (y - cy) ** 2 + (x - cx) ** 2
        out *= 1 - rng.uniform(0.2, 0.6) * np.clip(r2 / 0.5, 0, 1)
    if rng.random() < 0.7:  # glare: a bright gradient or spot
        angle = rng.uniform(0, 2 * math.pi)
        ramp = np.clip((np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) + 0.5, 0, 1)
        if rng.random() < 0.5:
            cy, cx = rng.uniform(0.1, 0.9, 2)
            ramp = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(0.05, 0.25) ** 2))
        out += rng.uniform(30, 110) * ramp ** rng.uniform(1, 3)
    if rng.random() < 0.5:  # moire: a fine interference pattern
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(2.2, 6) / s
        phase = (np.cos(angle) * x + np.sin(angle) * y) / period
        out += rng.uniform(3, 12) * np.sin(2 * math.pi * phase + 0.5 * np.sin(2 * math.pi * y * rng.uniform(1, 4)))
    return np.clip(out, 0, 255).astype(np.uint8)


def haze(image, rng):
    """A portable film: scatter and low contrast, a veil towards a grey level."""
    veil = rng.uniform(0.1, 0.45)
    level = rng.uniform(90, 220)
    return np.clip(image * (1 - veil) + level * veil, 0, 255).astype(np.uint8)


def lost_resolution(image, rng):
    s = image.shape[0]
    small = max(24, int(s * rng.uniform(0.25, 0.7)))
    picture = Image.fromarray(image).resize((small, small), Image.BILINEAR)
    return np.asarray(picture.resize((s, s), Image.BILINEAR if rng.random() < 0.7 else Image.NEAREST))


def non_film(size, rng):
    """An image with no anatomy: flat, noise, a smooth field, a gradient, stripes, random shapes."""
    kind = rng.integers(6)
    if kind == 0:
        image = np.full((size, size), rng.uniform(0, 255), np.float32)
    elif kind == 1:
        image = rng.uniform(0, 255, (size, size))
    elif kind == 2:
        image = _smooth_field(rng, (size, size), rng.uniform(2, size / 6)) * 255
    elif kind == 3:
        y, x = np.mgrid[0:size, 0:size] / size
        image = (np.cos(rng.uniform(0, 6.3)) * x + np.sin(rng.uniform(0, 6.3)) * y) * 200 + 30
    elif kind == 4:
        y, x = np.mgrid[0:size, 0:size] / size
        image = 127 + 100 * np.sign(np.sin(2 * math.pi * x * rng.uniform(2, 20)))
    else:  # a scene of sorts: smooth background, blurred ellipses and polygons of any grey
        picture = Image.fromarray(np.uint8(_smooth_field(rng, (size, size), size / 8) * rng.uniform(60, 255)))
        draw = ImageDraw.Draw(picture)
        for _ in range(int(rng.integers(2, 9))):
            x0, y0 = rng.uniform(-0.2, 1, 2) * size
            w, h = rng.uniform(0.05, 0.6, 2) * size
            if rng.random() < 0.5:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=int(rng.integers(0, 256)))
            else:
                draw.polygon([tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * size],
                             fill=int(rng.integers(0, 256)))
        image = ndimage.gaussian_filter(np.asarray(picture, np.float32), rng.uniform(0, 3))
    image = image + rng.normal(0, rng.uniform(0, 20), (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), np.zeros((size, size), np.uint8)


class Augmenter:
    """One film and its mask -> an augmented copy (uint8 image, uint8 labels), same size."""

    def __init__(self, seed=0):
        import imgaug
        import imgaug.augmenters as iaa

        imgaug.seed(seed)
        self.rng = np.random.default_rng(seed)
        sometimes = lambda p, a: iaa.Sometimes(p, a)  # noqa: E731
        self.geometry = iaa.Sequential([
            sometimes(0.8, iaa.Affine(
                scale={"x": (0.85, 1.15), "y": (0.85, 1.15)},  # other aspect ratios, tighter framing
                translate_percent={"x": (-0.08, 0.08), "y": (-0.08, 0.08)},  # shifted framing
                rotate=(-12, 12), shear=(-4, 4), order=1, mode="constant", cval=(0, 255))),
            sometimes(0.2, iaa.PerspectiveTransform(scale=(0.02, 0.09), keep_size=True, cval=(0, 255),
                                                    mode="constant")),  # phone photos
            sometimes(0.15, iaa.ElasticTransformation(alpha=(5, 25), sigma=(6, 10))),  # other shapes
        ])
        self.contrast = iaa.SomeOf((0, 3), [
            iaa.GammaContrast((0.5, 2.0)),
            iaa.LinearContrast((0.5, 1.4)),
            iaa.CLAHE(clip_limit=(1, 4)),
            iaa.AdditiveGaussianNoise(scale=(0, 14)),
            iaa.GaussianBlur(sigma=(0, 1.8)),
            iaa.JpegCompression(compression=(40, 92)),
        ], random_order=True)

    def __call__(self, image, mask):
        from imgaug.augmentables.segmaps import SegmentationMapsOnImage

        rng = self.rng
        if rng.random() < 0.06:
            return non_film(image.shape[0], rng)
        if rng.random() < 0.2:  # a mirrored film: the labels follow the image side, the heart stays the heart
            image, mask = image[:, ::-1], mask[:, ::-1].copy()
            lungs = mask.copy()
            mask[lungs == 1], mask[lungs == 2] = 2, 1
        image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
        if rng.random() < 0.35:
            image, mask = zoom_out(image, mask, rng)
        if rng.random() < 0.45:
            image = consolidation(image, mask, rng)
        segmap = SegmentationMapsOnImage(mask.astype(np.int32), shape=image.shape)
        image, segmap = self.geometry(image=image, segmentation_maps=segmap)
        mask = segmap.get_arr().astype(np.uint8)
        if rng.random() < 0.15:
            image = burnt_in_text(image, rng)
        if rng.random() < 0.15:
            image = haze(image, rng)
        if rng.random() < 0.15:
            image = lost_resolution(image, rng)
        if rng.random() < 0.15:
            image = photo_effects(image, rng)
        image = self.contrast(image=image)
        return image, mask


# ---------------------------------------------------------------- model

def conv_block(x, filters, name):
    import keras
    from keras import layers

    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        # momentum 0.9: the moving statistics follow the weights within an epoch (0.99 lagged: the
        # held-out Dice jumped between epochs while the learning rate was high)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_model(size, filters=FILTERS):
    """A U-Net: len(filters) - 1 poolings, softmax over CLASSES at the input's size."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name=INPUT_NAME)
    x, skips = inputs, []
    for level, f in enumerate(filters[:-1]):
        x = conv_block(x, f, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = conv_block(x, filters[-1], "bottom")
    for level in reversed(range(len(filters) - 1)):
        x = layers.Conv2DTranspose(filters[level], 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters[level], f"dec{level}")
    outputs = layers.Conv2D(len(CLASSES), 1, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="anatomy_unet")


def _register_loss():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="pneumo_anatomy", name="ce_dice")
    def ce_dice(y_true, y_pred):
        """Cross-entropy + (1 - soft Dice of the three structures, over the batch)."""
        truth = ops.one_hot(ops.cast(ops.squeeze(y_true, -1) if len(y_true.shape) == 4 else y_true, "int32"),
                            len(CLASSES))
        pred = ops.clip(y_pred, 1e-7, 1.0)
        ce = -ops.mean(ops.sum(truth * ops.log(pred), axis=-1))
        inter = ops.sum(truth * y_pred, axis=(0, 1, 2))
        total = ops.sum(truth + y_pred, axis=(0, 1, 2))
        dice = (2 * inter + 1.0) / (total + 1.0)
        return ce + 1.0 - ops.mean(dice[1:])

    return ce_dice


def compiled(size, steps, epochs, filters=FILTERS):
    import keras

    model = build_model(size, filters)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE * 0.1, decay_steps=max(1, steps * epochs),
                                                      alpha=0.01, warmup_target=LEARNING_RATE,
                                                      warmup_steps=min(steps * 2, steps * epochs // 10))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=_register_loss())
    return model


def make_dataset(images, masks, size, seed):
    import keras

    class Films(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.augment = Augmenter(seed)
            self.order_rng = np.random.default_rng(seed + 1)
            self.order = self._shuffled()

        def _shuffled(self):
            return np.concatenate([self.order_rng.permutation(len(images)) for _ in range(REPEATS)])

        def __len__(self):
            return len(self.order) // BATCH

        def __getitem__(self, index):
            x = np.zeros((BATCH, size, size, 1), np.float32)
            y = np.zeros((BATCH, size, size, 1), np.int32)
            for j, i in enumerate(self.order[index * BATCH:(index + 1) * BATCH]):
                image, mask = self.augment(images[i], masks[i])
                x[j, ..., 0], y[j, ..., 0] = normalised(image), mask
            return x, y

        def on_epoch_end(self):
            self.order = self._shuffled()

    return Films()


def predict_labels(model, images, batch=8):
    x = np.stack([normalised(i) for i in images])[..., None]
    return np.argmax(model.predict(x, batch_size=batch, verbose=0), axis=-1)


# ---------------------------------------------------------------- export

def export_onnx(model, path):
    """Keras model -> ONNX with input `image` (N, S, S, 1) and output `probabilities`, batch dynamic."""
    import keras

    path = Path(path)
    if keras.backend.backend() == "tensorflow":
        import onnx
        import tensorflow as tf
        import tf2onnx

        def forward(x):
            return {OUTPUT_NAME: model(x, training=False)}

        spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME),)
        proto, _ = tf2onnx.convert.from_function(tf.function(forward), input_signature=spec, opset=ONNX_OPSET)
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        proto.metadata_props.add(key="credits", value=CREDITS)
        onnx.save(proto, str(path))
    else:  # keras's own exporter (needs TensorFlow or torch underneath)
        model.export(str(path), format="onnx")


def quantize_int8(float_path, out_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_path), str(out_path), weight_type=QuantType.QInt8)


def held_out_dice(folder, data, names):
    """Dice per structure on the held-out films through the served segmenter (pneumo/anatomy): mean, per film."""
    segmenter = Segmenter.load(folder)
    size = segmenter.size
    truth = load_films(data, names, size)[1]
    labels = []
    for start in range(0, len(names), 8):
        films = []
        for name in names[start:start + 8]:
            with Image.open(Path(data) / "images" / name) as image:
                image.load()
                films.append(image.copy())
        for anatomy in segmenter.segment(films):
            label = np.zeros((size, size), np.uint8)
            for k, mask in enumerate((anatomy.right, anatomy.left, anatomy.heart), start=1):
                if mask is not None:
                    label[mask & (label == 0)] = k
            labels.append(label)
    scores = dice_scores(np.stack(labels), truth)
    return {k: float(np.mean(v)) for k, v in scores.items()}, scores


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.anatomy.segmenter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--data", default="../shared/data/lung_masks", help="the lung_masks folder")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"the square input, px (default {DEFAULT_SIZE})")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"default {DEFAULT_EPOCHS}")
    p.add_argument("--folds", type=int, default=FOLDS)
    p.add_argument("--fold", type=int, default=SHIPPED_FOLD,
                   help=f"held-out films: every FOLDS-th from this index (default {SHIPPED_FOLD}: the shipped split)")
    p.add_argument("--filters", default=",".join(map(str, FILTERS)),
                   help="filters per level, comma-separated (the last is the bottleneck)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES,
                   help="over this float ONNX size, dynamic int8 quantisation is tried (default 1.5 MB)")
    p.add_argument("--time-epoch", action="store_true", help="time one epoch (no checkpoint, no export) and stop")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    filters = tuple(int(f) for f in args.filters.split(","))
    names = film_names(args.data)
    train_names, held_names = split(names, args.folds, args.fold)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    train_x, train_y = load_films(args.data, train_names, args.size)
    held_x, held_y = load_films(args.data, held_names, args.size)
    print(f"{len(train_names)} training films, {len(held_names)} held out (fold {args.fold} of {args.folds}); "
          f"loaded at {args.size} px in {time.time() - started:.0f} s", flush=True)
    dataset = make_dataset(train_x, train_y, args.size, args.seed)
    steps = len(dataset)

    state_path, checkpoint = out / "state.json", out / "checkpoint.keras"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    same = state.get("size") == args.size and state.get("filters") == list(filters) \
        and state.get("epochs") == args.epochs and state.get("fold") == [args.fold, args.folds]
    if same and checkpoint.is_file() and not args.time_epoch:
        _register_loss()
        model = keras.saving.load_model(checkpoint)
        initial_epoch, spent = state["epoch"], state["seconds"]
        print(f"resuming after epoch {initial_epoch} ({spent / 60:.1f} min spent)", flush=True)
    else:
        model = compiled(args.size, steps, 1 if args.time_epoch else args.epochs, filters)
        initial_epoch, spent = 0, 0.0
    print(f"U-Net {filters}: {model.count_params():,} parameters; {steps} steps of {BATCH} per epoch", flush=True)

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            nonlocal spent
            seconds = time.time() - self.t
            spent += seconds
            scores = {k: float(np.mean(v)) for k, v in dice_scores(predict_labels(self.model, held_x), held_y).items()}
            if logs is not None:
                logs.update({f"val_dice_{k}": v for k, v in scores.items()})
            print(f"epoch {epoch + 1}/{args.epochs}: {seconds:.0f} s, loss {logs.get('loss', float('nan')):.4f}; "
                  f"held-out Dice right {scores['right']:.4f} left {scores['left']:.4f} "
                  f"heart {scores['heart']:.4f}", flush=True)

    class State(keras.callbacks.Callback):  # after ModelCheckpoint: the checkpoint is this epoch's
        def on_epoch_end(self, epoch, logs=None):
            state_path.write_text(json.dumps({"epoch": epoch + 1, "seconds": spent, "size": args.size,
                                              "filters": list(filters), "epochs": args.epochs,
                                              "fold": [args.fold, args.folds]}))

    if args.time_epoch:
        model.fit(dataset, epochs=1, callbacks=[Progress()], verbose=2)
        return 0
    if initial_epoch < args.epochs:
        model.fit(dataset, epochs=args.epochs, initial_epoch=initial_epoch, verbose=0,
                  callbacks=[Progress(), keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
                             keras.callbacks.ModelCheckpoint(str(checkpoint), save_best_only=False), State()])
    model.save(out / KERAS_MODEL)

    started = time.time()
    float_path = out / MODEL_FILE
    export_onnx(model, float_path)
    info = {
        "model": "U-Net (Keras 3), softmax per pixel",
        "input_size": args.size,
        "input": f"`{INPUT_NAME}` (N, {args.size}, {args.size}, 1) float32: the film squashed to the square "
                 "(aspect not kept), grey, scaled to 0-1 by its own 1st-99th percentiles",
        "output": f"`{OUTPUT_NAME}` (N, {args.size}, {args.size}, {len(CLASSES)}) softmax",
        "classes": ["background", "right lung (patient's right: the image's left)",
                    "left lung (patient's left: the image's right)", "heart"],
        "filters": list(filters),
        "parameters": int(model.count_params()),
        "epochs": args.epochs,
        "steps_per_epoch": steps,
        "batch": BATCH,
        "training_seconds": round(spent, 1),
        "training_films": len(train_names),
        "fold": args.fold,
        "folds": args.folds,
        "held_out_rule": f"labels.csv sorted by file name, every {args.folds}th film from index {args.fold}",
        "held_out": held_names,
        "masks": "SCR convention: the visible lung only (not behind the heart nor below the diaphragm's dome)",
        "dice_measured": f"on the held-out films at {args.size} px, through pneumo/anatomy/segmenter.py "
                         "(largest component, holes filled), masks resized by nearest neighbour",
        "credits": CREDITS,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    float_dice, _ = held_out_dice(out, args.data, held_names)
    info["dice"] = {k: round(v, 4) for k, v in float_dice.items()}
    info["onnx"] = {"bytes": float_path.stat().st_size, "type": "float32"}
    print(f"{MODEL_FILE}: {float_path.stat().st_size:,} bytes, exported in {time.time() - started:.0f} s; "
          f"held-out Dice " + ", ".join(f"{k} {v:.4f}" for k, v in float_dice.items()), flush=True)
    if float_path.stat().st_size > args.max_bytes:
        float_path.replace(out / "anatomy.float.onnx")
        quantize_int8(out / "anatomy.float.onnx", float_path)
        int8_dice, _ = held_out_dice(out, args.data, held_names)
        info["dice_float"] = info["dice"]
        info["dice"] = {k: round(v, 4) for k, v in int8_dice.items()}
        info["onnx"] = {"bytes": float_path.stat().st_size, "type": "int8 weights (dynamic quantisation)",
                        "float_bytes": (out / "anatomy.float.onnx").stat().st_size}
        print(f"int8: {float_path.stat().st_size:,} bytes; held-out Dice "
              + ", ".join(f"{k} {v:.4f}" for k, v in int8_dice.items()), flush=True)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
