"""Post-training int8 quantization of a run folder, for fast CPU inference:

    python -m training.quantize RUN_FOLDER --data DATA [--calibration-images N]

writes next to model.keras

    model.int8.onnx   the model as ONNX with int8 weights (per channel) and
                      int8 activations (static QDQ), calibrated on training
                      images; outputs `probabilities` and `features` (the
                      not-a-chest-X-ray check's, see pneumo/ood.py)
    int8.json         its figures on the selection split (val/) beside the
                      Keras model's, how much the check's features and answers
                      move, and the sha256 of the model.keras it came from

`pneumo` uses model.int8.onnx for probabilities without a heatmap when it is
there and matches model.keras (see pneumo/fast.py). The int8 model is only
written when it costs at most --max-cost (0.5 percentage points) of accuracy
and of ROC AUC on the selection split; otherwise int8.json says why.
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pneumo.calibration import calibrate
from pneumo.fast import INT8_FILE, INT8_REPORT, OnnxModel
from pneumo.loading import MODEL_FILE, sha256_of
from pneumo.preprocess import to_model_input

from .data import labels_of, load_pixels, load_splits
from .metrics import evaluate

OPSET = 17
CALIBRATION_BATCH = 8
# Accuracy and ROC AUC the int8 model may lose on the selection split, as fractions.
MAX_COST = 0.005


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_FOLDER", help="a training run folder (model.keras + config.json)")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="the data folder the run was trained on: train/, val/ [PNEUMO_DATA_DIR]")
    p.add_argument("--calibration-images", type=int, default=256,
                   help="training images whose activation ranges set the int8 scales (default 256)")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="how activation ranges are calibrated (default minmax; percentile and entropy "
                        "hold every calibration activation in memory: use fewer images)")
    p.add_argument("--float-features", action="store_true",
                   help="keep the Grad-CAM layer's convolution in float32, for steadier features for the "
                        "not-a-chest-X-ray check (about 3%% of the work at 128 px)")
    p.add_argument("--max-cost", type=float, default=MAX_COST,
                   help="largest loss of accuracy and of ROC AUC allowed, as a fraction (default 0.005)")
    p.add_argument("--force", action="store_true", help="write model.int8.onnx even when it costs more")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Path(args.run)
    config = json.loads((run / "config.json").read_text())
    size = config["image_size"]
    splits = _splits(args.data, config)
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(splits.train))[:args.calibration_images]
    calibration = to_model_input(load_pixels([splits.train[i] for i in sorted(chosen)], size))
    print(f"calibrating on {len(calibration)} training images; measuring on {splits.selection_name} "
          f"({len(splits.selection)} images)", flush=True)

    import keras

    model = keras.saving.load_model(run / MODEL_FILE, compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        quantized = Path(tmp) / INT8_FILE
        quantize(model, config["gradcam_layer"], calibration, quantized, Path(tmp), args.method,
                 args.float_features)
        print(f"exported and quantized in {time.time() - started:.0f} s", flush=True)

        inputs = to_model_input(load_pixels(splits.selection, size))
        keras_features, keras_raw = _keras_outputs(model, config["gradcam_layer"], inputs)
        int8 = OnnxModel(quantized)
        int8_out = [int8.run(inputs[i:i + 32]) for i in range(0, len(inputs), 32)]
        int8_raw = np.concatenate([out["probabilities"] for out in int8_out])
        int8_features = np.concatenate([out["features"] for out in int8_out])
        report = compare(labels_of(splits.selection), keras_raw, int8_raw, config, args)
        report["features"] = compare_features(keras_features, int8_features, run)
        report.update(split=splits.selection_name, calibration_images=len(calibration), method=args.method,
                      float_features=args.float_features,
                      keras_sha256=sha256_of(run / MODEL_FILE), int8_bytes=quantized.stat().st_size,
                      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (run / INT8_FILE).unlink(missing_ok=True)
        if report["accepted"] or args.force:
            quantized.replace(run / INT8_FILE)
            report["int8_sha256"] = sha256_of(run / INT8_FILE)
    (run / INT8_REPORT).write_text(json.dumps(report, indent=2))
    k, q = report["keras"], report["int8"]
    print(f"{splits.selection_name}: accuracy {k['accuracy']:.4f} -> {q['accuracy']:.4f}, "
          f"ROC AUC {k['roc_auc']} -> {q['roc_auc']}; largest probability change {report['max_abs_diff']:.4f}")
    print("not-a-chest-X-ray check's features: " + ", ".join(f"{key} {value:.4g}"
                                                           for key, value in report["features"].items()))
    if not report["accepted"]:
        print(f"int8 costs more than {args.max_cost:.1%}: " + ("written anyway (--force)" if args.force
              else f"{INT8_FILE} not written"), file=sys.stderr)
        return 0 if args.force else 1
    print(f"wrote {run / INT8_FILE} ({report['int8_bytes'] / 1e6:.1f} MB) and {run / INT8_REPORT}")
    return 0


def _splits(data, config):
    """The run's own train/selection split, from the training command it recorded."""
    from .train import parse_args as train_args

    command = shlex.split(config.get("command", ""))[3:]  # after `python -m training.train`
    try:
        recorded = train_args(command)
        fraction, seed = recorded.holdout_fraction, recorded.seed
    except SystemExit:
        fraction, seed = train_args([]).holdout_fraction, 0
    return load_splits(data, fraction, seed)


def export_onnx(model, gradcam_layer, path):
    """A Keras model -> float32 ONNX with input `input` (N, H, W, 3) and outputs
    `probabilities` (N, 3) and `features` (N, channels): the Grad-CAM layer's
    maps averaged over space, which the not-a-chest-X-ray check reads (pneumo/ood.py)."""
    import keras
    import tensorflow as tf
    import tf2onnx

    both = keras.Model(model.inputs, [model.get_layer(gradcam_layer).output, model.output])

    def forward(x):
        maps, probabilities = both(x, training=False)
        return {"probabilities": probabilities, "features": tf.reduce_mean(maps, axis=(1, 2))}

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)
    tf2onnx.convert.from_function(tf.function(forward), input_signature=spec, opset=OPSET, output_path=str(path))


def quantize(model, gradcam_layer, calibration, out, workdir, method="minmax", float_features=False):
    """Export `model` and quantize it to `out`, with ranges from `calibration` inputs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path, prepared = workdir / "model.float32.onnx", workdir / "model.prepared.onnx"
    export_onnx(model, gradcam_layer, float_path)
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(calibration, max(1, len(calibration) // CALIBRATION_BATCH)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"input": batch}

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(
        str(prepared), str(out), Batches(),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
        # The convolutions are nearly all the work. The head (pooling, the
        # 3-way dense layer, softmax) and the features' pooling stay float:
        # they cost nothing and their outputs are the product.
        op_types_to_quantize=["Conv", "Relu", "MaxPool"],  # a ReLU after a convolution folds into it
        nodes_to_exclude=_layer_nodes(prepared, gradcam_layer) if float_features else None,
    )


def _layer_nodes(path, layer):
    """The ONNX nodes that tf2onnx made of a Keras layer (named .../LAYER_1/... or .../LAYER/...)."""
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node
            if f"/{layer}/" in node.name or f"/{layer}_1/" in node.name]


def compare(labels, keras_raw, int8_raw, config, args):
    """Both models' figures at the run's temperature and threshold, and whether int8 passes."""
    threshold = config["threshold"]
    keys = ("accuracy", "roc_auc", "sensitivity", "specificity", "bacterial_viral_auc", "ece")
    figures = {}
    for name, raw in (("keras", keras_raw), ("int8", int8_raw)):
        m = evaluate(labels, calibrate(raw, config), threshold)
        figures[name] = {k: m[k] for k in keys}
    cost = {k: _minus(figures["keras"][k], figures["int8"][k]) for k in ("accuracy", "roc_auc")}
    accepted = all(c is None or c <= args.max_cost + 1e-12 for c in cost.values())
    return {**figures, "cost": cost, "max_cost": args.max_cost, "accepted": accepted,
            "max_abs_diff": float(np.abs(keras_raw - int8_raw).max()),
            "mean_abs_diff": float(np.abs(keras_raw - int8_raw).mean())}


def _keras_outputs(model, gradcam_layer, inputs):
    """(pooled Grad-CAM-layer features, raw probabilities), as pneumo computes them with Keras."""
    import keras

    maps = model.get_layer(gradcam_layer).output
    both = keras.Model(model.inputs, [keras.layers.GlobalAveragePooling2D()(maps), model.output])
    features, raw = both.predict(inputs, batch_size=32, verbose=0)
    return features, raw


def compare_features(keras_features, int8_features, run):
    """How much int8 moves the features of the not-a-chest-X-ray check, and,
    when the run has that check fitted (ood.npz), whether its answers change."""
    from pneumo.ood import FeatureCheck

    scale = float(np.abs(keras_features).max()) or 1.0
    out = {"max_abs_diff_relative": float(np.abs(keras_features - int8_features).max() / scale)}
    check = FeatureCheck.load(run)
    if check is not None and check.mean.shape == (keras_features.shape[1],):
        before, after = check.distance(keras_features), check.distance(int8_features)
        out["ood_distance_max_relative_change"] = float(np.max(np.abs(after - before) / np.maximum(before, 1e-9)))
        out["ood_flags_keras"] = int((before > check.threshold).sum())
        out["ood_flags_int8"] = int((after > check.threshold).sum())
        out["ood_flags_disagree"] = int(((before > check.threshold) != (after > check.threshold)).sum())
    return out


def _minus(a, b):
    return None if a is None or b is None else float(a - b)


if __name__ == "__main__":
    sys.exit(main())
