"""Re-derive a run folder's threshold and figures without retraining:

    python -m training.report.threshold RUN_FOLDER [--data DATA]

Scores the run's splits with its model.keras (the weights stay as they are),
applies the saved calibration, chooses the threshold by the training rule
(training/report/metrics.py: halfway between two observed probabilities) and
rewrites what depends on it: config.json (threshold, rule, validation
figures), metrics.json, onnx.json (each ONNX runtime against Keras at the new
threshold) and the model card. For folders made before that rule.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from pneumo.answers.calibration import calibrate
from pneumo.answers.classes import NORMAL, pneumonia_probability
from pneumo.model.preprocess import to_model_input
from pneumo.model.run_folder import FLOAT_ONNX, INT8_ONNX, KERAS_MODEL, METRICS, ONNX_REPORT, read_config, write_config
from pneumo.model.runtime import ONNX_FLOAT, ONNX_INT8

from training.report.card import rewrite_card
from training.children.data import labels_of, load_pixels, recorded_splits
from training.report.metrics import choose_threshold, evaluate
from training.deploy.quantize import compare, keras_outputs
from training.report.run_folder import THRESHOLD_RULE

VALIDATION_KEYS = ("accuracy", "roc_auc", "sensitivity", "specificity", "bacterial_viral_auc", "ece")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.report.threshold", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_FOLDER", help="a training run folder (model.keras + config.json)")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="the data folder the run was trained on [PNEUMO_DATA_DIR]")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Path(args.run)
    config = read_config(run)
    splits = recorded_splits(args.data, config)

    import keras

    model = keras.saving.load_model(run / KERAS_MODEL, compile=False)
    size = config["image_size"]
    inputs = {name: to_model_input(load_pixels(samples, size)) for name, samples in splits.reports.items()}
    outputs = {name: keras_outputs(model, config["gradcam_layer"], x) for name, x in inputs.items()}
    labels = {name: labels_of(samples) for name, samples in splits.reports.items()}
    calibrated = {name: calibrate(raw, config) for name, (raw, _) in outputs.items()}

    selection = splits.selection_name
    old = config["threshold"]
    config["threshold"] = choose_threshold(labels[selection] != NORMAL, pneumonia_probability(calibrated[selection]))
    config["threshold_rule"] = THRESHOLD_RULE
    figures = {name: evaluate(labels[name], p, config["threshold"]) for name, p in calibrated.items()}
    config["validation"] = {k: figures[selection][k] for k in VALIDATION_KEYS}
    write_config(run, {k: v for k, v in config.items() if k != "format_version"})
    print(f"threshold {old!r} -> {config['threshold']!r}; {selection} accuracy {figures[selection]['accuracy']:.4f}")

    metrics = json.loads((run / METRICS).read_text())
    metrics["splits"] = figures
    (run / METRICS).write_text(json.dumps(metrics, indent=2))
    _rescore_onnx(run, config, inputs[selection], outputs[selection], labels[selection])
    rewrite_card(run)
    return 0


def _rescore_onnx(run, config, inputs, reference, labels):
    """onnx.json's comparisons at the new threshold (the ONNX files are not touched)."""
    from pneumo.model.onnx_runtime import OnnxRuntimeModel, float_model

    if not (run / ONNX_REPORT).is_file():
        return
    report = json.loads((run / ONNX_REPORT).read_text())
    runtimes = {"float": lambda: OnnxRuntimeModel(float_model(run / FLOAT_ONNX, run / KERAS_MODEL), ONNX_FLOAT),
                "int8": lambda: OnnxRuntimeModel(run / INT8_ONNX, ONNX_INT8)}
    for kind, load in runtimes.items():
        if kind not in report or not (run / (FLOAT_ONNX if kind == "float" else INT8_ONNX)).is_file():
            continue
        report[kind].update(compare(load(), inputs, reference, labels, config))
        if "cost" in report[kind]:
            report[kind]["cost"] = {k: float(report[kind]["keras"][k] - report[kind]["runtime"][k])
                                    for k in ("accuracy", "roc_auc")}
        print(f"{kind}: accuracy {report[kind]['runtime']['accuracy']:.4f}, "
              f"labels agree with Keras on {report[kind]['label_agreement']:.2%}")
    (run / ONNX_REPORT).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
