"""The adult answer's own eyes: pretrained VGG16 convolutions at 160 px, as an int8 ONNX model.

    python -m training.adults.trunk RUN_FOLDER [--weights hed] [--layer block4_conv2] [--image-size 160]
                                   [--continue-pass] [--adult-data ADULT] [--data DATA] [--calibration-images 128]

writes RUN_FOLDER/adult_trunk.int8.onnx: input `input` (N, S, S, 3), the same
preprocessing as the children's model at S px, output `maps`, the activations
of --layer. With --continue-pass it is a branch instead: its input is the
children's model's block3_pool maps, and it runs only the layers after them
(pneumo/model/one_pass.py), so adults cost one pass and a fifth; that needs
a children's model whose first three blocks are --weights' own, frozen, at
the trunk's size (checked here, and again at every load). Then `python -m training.checks.scope RUN_FOLDER --adult-data ADULT
--only-adult` fits the adult answer on those maps (training/adults/answer.py).

Why a second, frozen network: the children's model learnt block 4 and
block 5 on children at 128 px, and there the adult signal fades. The same
linear read-out over the lungs ranked radiologists' opacities above normals
at ROC AUC 0.86-0.87 on the children's model, 0.91 on HED's untouched block 4
at 224 px (benchmarks/adult_layers.py). Freezing that block inside the
children's model instead cost the children (README, "Who it is for").
Nothing here trains: the weights are the pretrained ones, so the trunk can
never learn "NIH versus Guangzhou".

Only the int8 model ships (about 5 MB up to block4_conv2, within the
bundled folder's 48 MB); its float weights are the pretrained file's, a
training-time dependency. Every runtime serves it through ONNX Runtime.
The report printed compares it with the float trunk on adult films.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pneumo.model import one_pass
from pneumo.model.one_pass import SHARED_LAYER
from pneumo.model.preprocess import preprocess
from pneumo.model.run_folder import ADULT_TRUNK, KERAS_MODEL, META_ADULT_TRUNK, ONNX_INPUT, ONNX_MAPS, ONNX_OPSET
from pneumo.model.onnx_runtime import OnnxMaps

from training.children.data import IMAGE_SUFFIXES, load_splits, open_grey
from training.adults.locked import open_films
from training.deploy.quantize import quantize, with_metadata

LAYER = "block4_conv2"  # HED, over the lungs: AUC as block4_pool's, at 5 MB instead of 8 (docs/benchmarks.md)
# The adult answer's figures held from 224 px down to 160 (README, "Who it is for"), at half the cost;
# at 128 px they fell below the shipping rule.
IMAGE_SIZE = 160
CALIBRATION_IMAGES = 128  # half adults, half children: the films the router may send here


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.adults.trunk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_FOLDER", help="the run folder that gets the adult trunk")
    p.add_argument("--weights", default="hed", help="pretrained VGG16 weights: hed, imagenet, a .npz of "
                   "training/children/pretrained.py or a .weights.h5; `none` (random) only for tests (default hed)")
    p.add_argument("--layer", default=LAYER, help=f"the VGG16 layer whose maps the adult answer reads (default {LAYER})")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE, help=f"input pixels (default {IMAGE_SIZE})")
    p.add_argument("--adult-data", default=os.environ.get("PNEUMO_ADULT_DATA_DIR", "../shared/data/adult_cxr"),
                   help="adult films for the int8 calibration [PNEUMO_ADULT_DATA_DIR]")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="children (train/) for the int8 calibration [PNEUMO_DATA_DIR]")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help=f"films whose activation ranges set the int8 scales (default {CALIBRATION_IMAGES})")
    p.add_argument("--continue-pass", action="store_true",
                   help="a branch that continues the run's children's model from its block3_pool "
                        "(input size: the run's own)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    images = calibration_films(args.adult_data, args.data, args.calibration_images)
    if args.continue_pass:
        report = write_branch(args.run, args.weights, args.layer, images)
    else:
        report = write_trunk(args.run, args.weights, args.layer, args.image_size, images)
    print(json.dumps(report, indent=2))
    return 0


def build_trunk(weights, layer, image_size):
    """Keras VGG16 from its input to `layer`, with the `weights` of training/children/model.py's sources."""
    import keras

    from training.children.model import pretrained_weights

    keras.utils.set_random_seed(0)  # `none` draws its weights: the same draw every run
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(image_size, image_size, 3))
    for name, values in pretrained_weights("vgg16", weights, image_size).items():
        if name in {l.name for l in base.layers}:
            base.get_layer(name).set_weights(values)
    return keras.Model(base.inputs, base.get_layer(layer).output, name="adult_trunk")


def build_branch(weights, layer, shared_shape):
    """Keras VGG16 from SHARED_LAYER's maps (`shared_shape`: h, w, C) to `layer`, with `weights`."""
    import keras

    whole = build_trunk(weights, layer, shared_shape[0] * 8)  # block3_pool: an eighth of the input
    names = [l.name for l in whole.layers]
    x = inputs = keras.Input(shared_shape)
    for name in names[names.index(SHARED_LAYER) + 1:names.index(layer) + 1]:
        x = whole.get_layer(name)(x)
    return keras.Model(inputs, x, name="adult_branch")


def shared_part(run):
    """The run's children's model up to SHARED_LAYER, and what its output is (pneumo/model/one_pass.py)."""
    import keras

    model = keras.saving.load_model(Path(run) / KERAS_MODEL, compile=False)
    if SHARED_LAYER not in {l.name for l in model.layers}:
        raise SystemExit(f"--continue-pass: the model of {run} has no {SHARED_LAYER} layer to continue from")
    weights = {l.name: l.get_weights() for l in model.layers if l.weights}
    part = keras.Model(model.inputs, model.get_layer(SHARED_LAYER).output)
    return part, one_pass.description(weights, model.input_shape[1])


def write_branch(run, weights, layer, films) -> dict:
    """Export, quantize and check the branch that continues the run's children's model; refuse (SystemExit)
    unless that model's first blocks are `weights`' own, so that the branch reads the maps it expects."""
    from training.children.model import pretrained_weights

    run = Path(run)
    (run / ADULT_TRUNK).unlink(missing_ok=True)
    part, shared = shared_part(run)
    if one_pass.fingerprint(pretrained_weights("vgg16", weights, shared["image_size"])) != shared["fingerprint"]:
        raise SystemExit(f"--continue-pass: the children's model of {run} does not keep {weights}' first "
                         "blocks as they are (trained, or other weights): a branch would read other maps")
    size = shared["image_size"]
    inputs = np.concatenate([np.asarray(part(preprocess(film, size), training=False)) for film in films])
    branch = build_branch(weights, layer, inputs.shape[1:])
    description = {"weights": weights, "layer": layer, "image_size": size, "continues": shared["layer"],
                   "continues_image_size": size, "continues_fingerprint": shared["fingerprint"]}
    return _quantized(run, branch, inputs, description, len(films))


def calibration_films(adult_dir, data_dir, count, seed=0) -> list:
    """`count` films, half adults (the locked patients' aside) and half train/ children, drawn at random."""
    rng = np.random.default_rng(seed)
    adults = open_films(adult_dir, sorted(p for p in Path(adult_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
    children = [s.path for s in load_splits(data_dir, seed=seed).train]
    picked = [adults[i] for i in rng.permutation(len(adults))[:count // 2]]
    picked += [children[i] for i in rng.permutation(len(children))[:count - len(picked)]]
    return [open_grey(p) for p in picked]


def write_trunk(run, weights, layer, image_size, films) -> dict:
    """Export, quantize and check the trunk; write RUN/adult_trunk.int8.onnx; return its report."""
    run = Path(run)
    (run / ADULT_TRUNK).unlink(missing_ok=True)
    trunk = build_trunk(weights, layer, image_size)
    inputs = np.concatenate([preprocess(film, image_size) for film in films])
    description = {"weights": weights, "layer": layer, "image_size": image_size}
    return _quantized(run, trunk, inputs, description, len(films))


def _quantized(run, trunk, inputs, description, films) -> dict:
    """Export `trunk` (Keras), quantize it on `inputs`, compare, and write RUN/adult_trunk.int8.onnx."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        full = Path(tmp) / "adult_trunk.float32.onnx"
        export(trunk, full, description)
        quantized = Path(tmp) / ADULT_TRUNK
        quantize(full, inputs, quantized, Path(tmp), description["layer"])
        report = {**description, **agreement(trunk, OnnxMaps(quantized), inputs),
                  "calibration_images": films, "bytes": quantized.stat().st_size,
                  "seconds": round(time.time() - started, 1)}
        quantized.replace(Path(run) / ADULT_TRUNK)
    return report


def export(trunk, path, description):
    """Keras trunk -> float32 ONNX: `input` -> `maps`, its description in the metadata."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    def forward(x):
        return {ONNX_MAPS: trunk(x, training=False)}

    spec = (tf.TensorSpec((None, *trunk.input_shape[1:]), tf.float32, name=ONNX_INPUT),)
    proto, _ = tf2onnx.convert.from_function(tf.function(forward), input_signature=spec, opset=ONNX_OPSET)
    onnx.save(with_metadata(proto, {META_ADULT_TRUNK: json.dumps(description)}), str(path))


def agreement(trunk, served, inputs, batch_size=16) -> dict:
    """How the int8 trunk's maps differ from the float trunk's, on the calibration films:
    the adult answer's features are each channel's mean and maximum, so those are compared."""
    ours, theirs = [], []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        ours.append(served(batch))
        theirs.append(np.asarray(trunk(batch, training=False)))
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    out = {}
    for name, pool in (("mean", np.mean), ("max", np.max)):
        a, b = pool(ours, axis=(1, 2)), pool(theirs, axis=(1, 2))
        out[f"{name}_relative_error"] = float(np.abs(a - b).mean() / (np.abs(b).mean() or 1.0))
        out[f"{name}_correlation"] = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return out


if __name__ == "__main__":
    sys.exit(main())
