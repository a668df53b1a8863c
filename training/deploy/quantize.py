"""The run folder's ONNX models, so that it serves without TensorFlow:

    python -m training.deploy.quantize RUN_FOLDER [--data DATA] [--no-int8] [--calibration-images N] [--force]

writes next to model.keras

    model.float.onnx  the float model's graph without its weights: pneumo
                      reads them from model.keras at load (pneumo/model/onnx_runtime.py)
    model.int8.onnx   int8 weights (per channel) and int8 activations (static
                      QDQ), calibrated on training images
    onnx.json         both against Keras on the selection split (val/): figures,
                      largest probability change, heatmap agreement; and the
                      sha256 of the model.keras they were made from

Both models output `probabilities` and `maps` (the heatmap layer's
activations) and, from a VGG16, `shared` (block3_pool: where an adult
branch continues the pass, pneumo/model/one_pass.py), and carry the head's
kernel, model.keras's sha256 and what `shared` is in their metadata. The training report runs this step after every training run
(`--no-onnx` skips it there, e.g. under the JAX backend, which tf2onnx
cannot convert); this command makes the models for any run folder later.
The float model must match Keras within 1e-4; the int8 model is only
written when it costs at most --max-cost (0.5 percentage points) of accuracy
and of ROC AUC on the selection split; otherwise onnx.json says why.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from pneumo.answers.calibration import calibrate
from pneumo.model.heatmap import heatmaps
from pneumo.model.loading import sha256_of
from pneumo.model.one_pass import SHARED_LAYER, description
from pneumo.model.preprocess import to_model_input
from pneumo.model.run_folder import (FLOAT_ONNX, INT8_ONNX, KERAS_MODEL, KERAS_WEIGHTS_MEMBER, META_HEAD_KERNEL,
                               META_KERAS_SHA256, META_SHARED, META_WEIGHTS, ONNX_INPUT, ONNX_MAPS, ONNX_OPSET,
                               ONNX_PROBABILITIES, ONNX_REPORT, ONNX_SHARED, read_config)
from pneumo.model.runtime_names import ONNX_FLOAT, ONNX_INT8
from pneumo.model.onnx_runtime import OnnxRuntimeModel, float_model

CALIBRATION_BATCH = 8
CALIBRATION_IMAGES = 256
# Accuracy and ROC AUC the int8 model may lose on the selection split, as fractions.
MAX_COST = 0.005
# The float model computes what Keras computes: only summation order may differ.
FLOAT_TOLERANCE = 1e-4
# tf2onnx turns a convolution kernel from Keras's (h, w, in, out) to (out, in, h, w).
CONV_LAYOUT = (3, 2, 0, 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.deploy.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_FOLDER", help="a training run folder (model.keras + config.json)")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="the data folder the run was trained on: train/, val/ [PNEUMO_DATA_DIR]")
    p.add_argument("--no-int8", action="store_true", help="only the float model")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help=f"training images whose activation ranges set the int8 scales (default {CALIBRATION_IMAGES})")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="how activation ranges are calibrated (default minmax; percentile and entropy "
                        "hold every calibration activation in memory: use fewer images)")
    p.add_argument("--float-features", action="store_true",
                   help="keep the heatmap layer's convolution in float32, for steadier maps and scope-check "
                        "features (about 3%% of the work at 128 px)")
    p.add_argument("--max-cost", type=float, default=MAX_COST,
                   help="largest loss of accuracy and of ROC AUC allowed, as a fraction (default 0.005)")
    p.add_argument("--force", action="store_true", help="write model.int8.onnx even when it costs more")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Path(args.run)
    config = read_config(run)

    import keras

    from training.children.data import labels_of, load_pixels, recorded_splits

    splits = recorded_splits(args.data, config)
    model = keras.saving.load_model(run / KERAS_MODEL, compile=False)
    size = config["image_size"]
    chosen = np.random.default_rng(0).permutation(len(splits.train))[:args.calibration_images]
    calibration = None if args.no_int8 else load_pixels([splits.train[i] for i in sorted(chosen)], size)
    report = write_onnx_models(run, model, config, calibration, load_pixels(splits.selection, size),
                               labels_of(splits.selection), splits.selection_name, print, args)
    return 0 if report.get("int8", {}).get("written", True) else 1


def write_onnx_models(run, model, config, calibration_pixels, selection_pixels, selection_labels, split, log,
                      options=None):
    """Write model.float.onnx, model.int8.onnx (unless `calibration_pixels` is None) and onnx.json into `run`."""
    options = options or parse_args([str(run)])
    run = Path(run)
    for name in (FLOAT_ONNX, INT8_ONNX, ONNX_REPORT):
        (run / name).unlink(missing_ok=True)  # never leave one made from an earlier model.keras
    keras_sha256 = sha256_of(run / KERAS_MODEL)
    layer = config["gradcam_layer"]
    inputs = to_model_input(selection_pixels)
    reference = keras_outputs(model, layer, inputs)
    report = {"keras_sha256": keras_sha256, "split": split, "images": len(inputs),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        full = Path(tmp) / "model.float32.onnx"
        export_float(model, layer, keras_sha256, full)
        write_graph_only(full, run / KERAS_MODEL, run / FLOAT_ONNX)
        report["float"] = compare(OnnxRuntimeModel(float_model(run / FLOAT_ONNX, run / KERAS_MODEL), ONNX_FLOAT),
                                  inputs, reference, selection_labels, config)
        report["float"]["bytes"] = (run / FLOAT_ONNX).stat().st_size
        log(f"{FLOAT_ONNX}: exported in {time.time() - started:.0f} s; largest probability change against Keras "
            f"{report['float']['max_abs_diff']:.2g}")
        if report["float"]["max_abs_diff"] > FLOAT_TOLERANCE:
            (run / FLOAT_ONNX).unlink()
            raise RuntimeError(f"the float ONNX model differs from Keras by {report['float']['max_abs_diff']:.2g} "
                               f"(allowed: {FLOAT_TOLERANCE:g}); not written")
        if calibration_pixels is not None:
            report["int8"] = _int8(full, Path(tmp), run, to_model_input(calibration_pixels), inputs, reference,
                                   selection_labels, config, options, log)
    (run / ONNX_REPORT).write_text(json.dumps(report, indent=2))
    return report


def _int8(full, tmp, run, calibration, inputs, reference, labels, config, options, log):
    started = time.time()
    quantized = tmp / INT8_ONNX
    quantize(full, calibration, quantized, tmp, config["gradcam_layer"], options.method, options.float_features)
    figures = compare(OnnxRuntimeModel(quantized, ONNX_INT8), inputs, reference, labels, config)
    cost = {k: _minus(figures["keras"][k], figures["runtime"][k]) for k in ("accuracy", "roc_auc")}
    accepted = all(c is None or c <= options.max_cost + 1e-12 for c in cost.values())
    written = accepted or options.force
    figures.update(cost=cost, max_cost=options.max_cost, accepted=accepted, written=written,
                   calibration_images=len(calibration), method=options.method,
                   float_features=options.float_features, bytes=quantized.stat().st_size)
    k, q = figures["keras"], figures["runtime"]
    log(f"{INT8_ONNX}: quantized in {time.time() - started:.0f} s; accuracy {k['accuracy']:.4f} -> "
        f"{q['accuracy']:.4f}, ROC AUC {k['roc_auc']} -> {q['roc_auc']}, labels agree on {figures['label_agreement']:.1%}, "
        f"heatmap correlation {figures['heatmap_correlation_mean']:.3f} on average, at least "
        f"{figures['heatmap_correlation_min_pneumonia'] or float('nan'):.3f} on PNEUMONIA verdicts")
    if written:
        quantized.replace(run / INT8_ONNX)
        figures["sha256"] = sha256_of(run / INT8_ONNX)
    if not accepted:
        log(f"int8 costs more than {options.max_cost:.1%}: " + ("written anyway (--force)" if written
            else f"{INT8_ONNX} not written; the float ONNX model serves"))
    return figures


# ------------------------------------------------------------------ export


def export_float(model, layer, keras_sha256, path):
    """A Keras model -> float32 ONNX: input `input` (N, H, W, 3), outputs `probabilities` (N, 3),
    `maps` (N, h, w, C) of `layer` and, where the model has it, `shared` (SHARED_LAYER's maps);
    metadata: model.keras's sha256, the head's kernel and what `shared` is."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    shared = SHARED_LAYER in {l.name for l in model.layers}
    outputs = [model.get_layer(layer).output, model.output] + ([model.get_layer(SHARED_LAYER).output] if shared else [])
    every = keras.Model(model.inputs, outputs)

    def forward(x):
        found = every(x, training=False)
        named = {ONNX_PROBABILITIES: found[1], ONNX_MAPS: found[0]}
        return {**named, ONNX_SHARED: found[2]} if shared else named

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=ONNX_INPUT),)
    proto, _ = tf2onnx.convert.from_function(tf.function(forward), input_signature=spec, opset=ONNX_OPSET)
    head_kernel = np.asarray(model.layers[-1].kernel, np.float32)  # the dense head: (C, 3)
    entries = {META_KERAS_SHA256: keras_sha256, META_HEAD_KERNEL: json.dumps(head_kernel.tolist())}
    if shared:
        weights = {l.name: l.get_weights() for l in model.layers if l.weights}
        entries[META_SHARED] = json.dumps(description(weights, model.input_shape[1]))
    onnx.save(with_metadata(proto, entries), str(path))


def with_metadata(proto, entries):
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        proto.metadata_props.add(key=key, value=value)
    return proto


def write_graph_only(full, keras_path, out):
    """The float ONNX model without the weights that model.keras holds: each
    such initializer keeps its name and shape, and the metadata says which
    HDF5 dataset of model.keras fills it, in which axis order."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(full))
    weights = keras_weights(keras_path)
    sources = {}
    for initializer in proto.graph.initializer:
        array = numpy_helper.to_array(initializer)
        if array.size < 64:
            continue  # shapes and axes: not weights, and too small to matter
        found = _find(array, weights)
        if found:
            sources[initializer.name] = found
            initializer.ClearField("raw_data")
            initializer.ClearField("float_data")
    onnx.save(with_metadata(proto, {META_WEIGHTS: json.dumps(sources)}), str(out))
    return sources


def keras_weights(keras_path) -> dict:
    """{HDF5 dataset path: float32 array} of model.keras's layer weights (float16 storage widened, as Keras loads them)."""
    import io

    import h5py

    with zipfile.ZipFile(keras_path) as archive:
        data = archive.read(KERAS_WEIGHTS_MEMBER)
    out = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        def visit(name, item):
            if isinstance(item, h5py.Dataset) and name.startswith("layers/") and item.dtype.kind == "f":
                out[name] = item[()].astype(np.float32)
        h5.visititems(visit)
    return out


def _find(array, weights):
    """[dataset, axes] of the Keras weight that equals `array` as it is or in
    tf2onnx's convolution layout, or None."""
    for name, weight in weights.items():
        for axes in (tuple(range(weight.ndim)), CONV_LAYOUT):
            if len(axes) == weight.ndim and weight.size == array.size:
                moved = weight.transpose(axes)
                if moved.shape == array.shape and np.array_equal(moved, array):
                    return [name, list(axes)]
    return None


def quantize(full, calibration, out, workdir, layer, method="minmax", float_features=False):
    """The float ONNX model `full` -> int8 `out`, with activation ranges from the `calibration` inputs."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "model.prepared.onnx"
    quant_pre_process(str(full), str(prepared), skip_symbolic_shape=True)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(calibration, max(1, len(calibration) // CALIBRATION_BATCH)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {ONNX_INPUT: batch}

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(
        str(prepared), str(out), Batches(),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
        # The convolutions are nearly all the work. The head (pooling, the
        # 3-way dense layer, softmax) stays float: it costs nothing and its
        # outputs are the product.
        op_types_to_quantize=["Conv", "Relu", "MaxPool"],  # a ReLU after a convolution folds into it
        nodes_to_exclude=_layer_nodes(prepared, layer) if float_features else None,
    )
    # The quantizer does not carry the metadata over: copy it from the float model.
    source = {p.key: p.value for p in onnx.load(str(full), load_external_data=False).metadata_props}
    onnx.save(with_metadata(onnx.load(str(out)), source), str(out))


def _layer_nodes(path, layer):
    """The ONNX nodes that tf2onnx made of a Keras layer (named .../LAYER_1/... or .../LAYER/...)."""
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node
            if f"/{layer}/" in node.name or f"/{layer}_1/" in node.name]


# ------------------------------------------------------------------ comparison


def keras_outputs(model, layer, inputs, batch_size=32):
    """(raw probabilities, maps) of the Keras model: the reference."""
    import keras

    both = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    maps, raw = both.predict(inputs, batch_size=batch_size, verbose=0)
    return raw, maps


def compare(runtime, inputs, reference, labels, config, batch_size=32):
    """An ONNX runtime against Keras's (raw, maps) on the same inputs: figures, probability
    changes, label agreement, heatmap correlation."""
    from training.report.metrics import evaluate

    outputs = [runtime(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    raw = np.concatenate([o[0] for o in outputs])
    maps = np.concatenate([o[1] for o in outputs])
    keras_raw, keras_maps = reference
    threshold = config["threshold"]
    keys = ("accuracy", "roc_auc", "sensitivity", "specificity", "bacterial_viral_auc", "ece")
    figures = {}
    for name, r in (("keras", keras_raw), ("runtime", raw)):
        m = evaluate(labels, calibrate(r, config), threshold)
        figures[name] = {k: m[k] for k in keys}
    ours = heatmaps(maps, raw, runtime.head_kernel)
    theirs = heatmaps(keras_maps, keras_raw, runtime.head_kernel)
    correlations = np.array([_correlation(a, b) for a, b in zip(ours, theirs)])
    sick = lambda r: calibrate(r, config)[:, 1:].sum(axis=1) >= threshold  # noqa: E731
    # The heatmaps shown as evidence are those of PNEUMONIA verdicts; a confidently
    # normal X-ray's map is almost empty, and a few noise-level cells decide its correlation.
    shown = correlations[sick(keras_raw)]
    return {**figures, "threshold": threshold, "max_abs_diff": float(np.abs(raw - keras_raw).max()),
            "mean_abs_diff": float(np.abs(raw - keras_raw).mean()),
            "label_agreement": float(np.mean(sick(raw) == sick(keras_raw))),
            "heatmap_correlation_mean": float(np.mean(correlations)),
            "heatmap_correlation_min": float(np.min(correlations)),
            "heatmap_correlation_min_pneumonia": float(shown.min()) if len(shown) else None,
            "features_max_abs_diff_relative": float(np.abs(maps.mean(axis=(1, 2)) - keras_maps.mean(axis=(1, 2))).max()
                                                    / (np.abs(keras_maps.mean(axis=(1, 2))).max() or 1.0))}


def _correlation(a, b):
    """Pearson's r; two flat maps (nothing raised the odds in either) agree fully."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    spread = np.sqrt((a * a).sum() * (b * b).sum())
    if spread == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float((a * b).sum() / spread)


def _minus(a, b):
    return None if a is None or b is None else float(a - b)


if __name__ == "__main__":
    sys.exit(main())
