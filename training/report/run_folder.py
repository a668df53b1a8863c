"""Turn the best checkpoint into a run folder ready for the Hub and the app:

    model.keras   float16 weights (half the size; loaded back as float32)
    config.json   what `pneumo` needs to serve it
    ood.npz, population.npz, population.json
                  the scope checks and their measured figures (training/checks/scope.py)
    orientation.npz   the turned-or-inverted-film check (training/checks/orientation.py)
    metrics.json  every figure on every evaluated split
    roc.png  training.png  reliability.png
    README.md     the model card
    model.float.onnx  model.int8.onnx  onnx.json
                  the ONNX models that serve without TensorFlow (training/deploy/quantize.py;
                  --no-onnx skips them)

File names and the config schema are pneumo/model/run_folder.py's.
"""

import io
import json
import shlex
import sys
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

from pneumo.answers.calibration import apply_calibration
from pneumo.answers.classes import CLASSES, NORMAL, pneumonia_probability
from pneumo.model.preprocess import to_model_input
from pneumo.model.run_folder import (ADULT, ADULT_CHECK, ADULT_HELD_OUT, ADULT_OPACITY, ADULT_REPORT, ADULT_TRUNK, CARD,
                               FLOAT_ONNX, INT8_ONNX, KERAS_MODEL, METRICS, ONNX_REPORT, OOD, ORIENTATION, POPULATION,
                               POPULATION_REPORT, RELIABILITY_PLOT, ROC_PLOT, TARGET_MEAN, TARGET_STD, TRAINING_PLOT,
                               VGG_MEAN_BGR, write_config)

from training.children.averaging import average_into
from training.report.calibrate import fit_calibration
from training.report.card import build_card
from training.children.checkpoints import read_state
from training.children.data import labels_of, load_pixels
from training.report.metrics import choose_threshold, evaluate
from training.children.model import GRADCAM_LAYERS, is_joint, served_model, trained_adult_head
from training.checks.orientation import fit_and_save as fit_orientation_check
from training.adults.trunk import CALIBRATION_IMAGES as TRUNK_CALIBRATION_IMAGES
from training.adults.trunk import calibration_films as trunk_calibration_films
from training.adults.trunk import write_branch, write_trunk
from training.adults.locked import FRACTION as LOCKED_SHARE
from training.checks.scope import fit_and_save as fit_scope_checks
from training.report.plots import plot_reliability, plot_roc, plot_training
from training.deploy.quantize import CALIBRATION_IMAGES, write_onnx_models

THRESHOLD_RULE = ("the cut on calibrated P(pneumonia) with the best accuracy on the selection split, halfway between "
                  "two observed probabilities (ties: nearest 0.5)")


def write_run_folder(args, splits, checkpoint_dir, log):
    out = Path(args.out)
    state = read_state(checkpoint_dir)
    # Evaluate what ships: the float16-stored model, not the float32 checkpoint
    # (their probabilities differ by ~1e-3, enough to move a borderline image).
    averaged = _averaged_epochs(args, state)
    trained = _final_model(checkpoint_dir, averaged, log)
    adult_held_out(trained, checkpoint_dir, out)
    save_float16(served_model(trained), out / KERAS_MODEL)
    model = keras.saving.load_model(out / KERAS_MODEL)
    raw = {name: _predict(model, samples, args.image_size) for name, samples in splits.reports.items()}
    selection_labels, selection_raw = raw[splits.selection_name]
    temperature, class_bias = fit_calibration(selection_raw, selection_labels)
    calibrated = {name: (labels, apply_calibration(p, temperature, class_bias)) for name, (labels, p) in raw.items()}
    selection_p = pneumonia_probability(calibrated[splits.selection_name][1])
    threshold = choose_threshold(selection_labels != NORMAL, selection_p)
    figures = {name: evaluate(labels, p, threshold) for name, (labels, p) in calibrated.items()}
    for name, m in figures.items():
        log(f"{name}: accuracy {m['accuracy']:.4f}, ROC AUC {m['roc_auc']:.4f}, sensitivity {m['sensitivity']:.3f}, "
            f"specificity {m['specificity']:.3f}, bacterial-vs-viral AUC {m['bacterial_viral_auc']}, ECE {m['ece']:.3f}")

    metrics = {"selection_split": splits.selection_name, "best_epoch": state["best_epoch"],
               "best_epoch_selection_auc": state["best_score"], "averaged_epochs": averaged,
               "epochs_trained": state["epoch"], "temperature": temperature, "class_bias": class_bias, "splits": figures,
               "history": state["history"]}
    config = _config(args, splits, state, threshold, (temperature, class_bias), figures, averaged)
    write_config(out, config)
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    plot_roc({n: (*calibrated[n], figures[n]) for n in calibrated if figures[n]["roc_auc"] is not None}, out / ROC_PLOT)
    plot_reliability(*calibrated[splits.selection_name], out / RELIABILITY_PLOT)
    if state["history"]:
        plot_training(state["history"], out / TRAINING_PLOT)
    scope = None
    if args.no_onnx:
        for name in (FLOAT_ONNX, INT8_ONNX, ONNX_REPORT, OOD, POPULATION, POPULATION_REPORT, ADULT, ADULT_REPORT,
                     ADULT_TRUNK, ADULT_CHECK, ADULT_OPACITY):
            (out / name).unlink(missing_ok=True)  # made from an earlier model.keras: never push those
        log(f"ONNX models and scope checks skipped (--no-onnx): make them with python -m training.deploy.quantize {out}, "
            f"then python -m training.checks.scope {out} --adult-data ADULT")
    else:
        onnx_models(model, config, splits, out, log, args.seed)
        adult_trunk(out, args, log)
        # After the ONNX models: the checks' features come from the runtime that will serve them.
        scope = fit_scope_checks(out, args.data, args.adult_data, seed=args.seed, log=log,
                                 jsrt_dir=getattr(args, "jsrt", None))
    orientation_check(out, args.data, args.adult_data, args.seed, log)
    onnx = json.loads((out / ONNX_REPORT).read_text()) if (out / ONNX_REPORT).is_file() else None
    adult = json.loads((out / ADULT_REPORT).read_text()) if (out / ADULT_REPORT).is_file() else None
    build_card(config, metrics, scope, onnx, adult).save(out / CARD)
    log(f"run folder written: {out}")


def adult_trunk(out, args, log):
    """adult_trunk.int8.onnx, for the adult answer (training/adults/trunk.py): with adult films, a
    VGG16 run and no joint training (a joint run's own read-out is judged instead). A run that keeps
    the first three blocks frozen at the trunk's size gets it as a branch of its own pass
    (pneumo/model/one_pass.py); any other, a whole trunk."""
    (out / ADULT_TRUNK).unlink(missing_ok=True)
    layer = getattr(args, "adult_trunk", "none")
    if not args.adult_data or layer == "none" or args.architecture != "vgg16" or getattr(args, "train_adults", False):
        return
    films = trunk_calibration_films(args.adult_data, args.data, TRUNK_CALIBRATION_IMAGES, args.seed)
    report = None
    if args.frozen_blocks >= 3 and args.image_size == args.adult_trunk_size:
        try:
            report = write_branch(out, args.pretrained, layer, films)
        except SystemExit as why:  # its first blocks are not the pretrained ones after all
            log(f"{ADULT_TRUNK}: not a branch ({why}); a whole trunk instead")
    report = report or write_trunk(out, args.pretrained, layer, args.adult_trunk_size, films)
    how = f", continuing the children's model's pass from its {report['continues']}" if "continues" in report else ""
    log(f"{ADULT_TRUNK}: {report['layer']} of {report['weights']} VGG16 at {report['image_size']} px{how}, "
        f"{report['bytes'] / 1e6:.1f} MB; channel means within {report['mean_relative_error']:.1%} of float")


def adult_held_out(model, checkpoint_dir, out):
    """A joint run: its adult read-out and held-out patients, for training/adults/answer.py to judge."""
    (out / ADULT_HELD_OUT).unlink(missing_ok=True)
    if not is_joint(model):
        return
    record = json.loads((Path(checkpoint_dir) / ADULT_HELD_OUT).read_text())
    head = trained_adult_head(model)
    record["trained_read_out"] = {"coef": head.coef.tolist(), "intercept": head.intercept}
    (out / ADULT_HELD_OUT).write_text(json.dumps(record))


def onnx_models(model, config, splits, out, log, seed=0):
    """The ONNX models that serve without TensorFlow. A failure here costs the
    run its fast serving, not its report: it says so and how to retry."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.permutation(len(splits.train))[:CALIBRATION_IMAGES])
    try:
        write_onnx_models(out, model, config, load_pixels([splits.train[i] for i in chosen], config["image_size"]),
                          load_pixels(splits.selection, config["image_size"]), labels_of(splits.selection),
                          splits.selection_name, log)
    except Exception as error:  # tf2onnx missing or failing: Keras still serves the run
        log(f"ONNX export failed ({type(error).__name__}: {error}); the run serves with Keras until "
            f"python -m training.deploy.quantize {out} succeeds")


def orientation_check(out, data, adult_data, seed, log):
    """The turned-or-inverted-film check (image statistics only: any model can use it). A failure
    here costs the run that check, not its report: it says so and how to retry."""
    try:
        fit_orientation_check(out, data, adult_data, seed=seed, log=log)
    except Exception as error:  # e.g. too few patients to hold any out
        (out / ORIENTATION).unlink(missing_ok=True)
        log(f"orientation check not fitted ({type(error).__name__}: {error}): films are analysed as they "
            f"come; retry with python -m training.checks.orientation {out}")


def _averaged_epochs(args, state):
    """The epochs whose weights the model averages ([] for the best epoch alone)."""
    epochs = sorted(epoch for _, epoch in state.get("top_epochs", []))
    return epochs if getattr(args, "average_best", 1) > 1 and len(epochs) > 1 else []


def _final_model(checkpoint_dir, averaged, log):
    model = keras.saving.load_model(Path(checkpoint_dir) / "best.keras")
    if averaged:
        average_into(model, checkpoint_dir, averaged)
        log(f"model: mean of the weights of epochs {', '.join(map(str, averaged))}")
    return model


def _joint_words(args) -> str:
    if not getattr(args, "train_adults", False):
        return ""
    start = f" Started from {args.init_from}." if args.init_from else ""
    return (f" Trained jointly on adult films (the adult read-out of the heatmap layer's maps; "
            f"the locked {LOCKED_SHARE:.0%} of the radiologist-read patients held out, text-mined labels at weight "
            f"{args.text_mined_weight:g}).{start}")


def _predict(model, samples, size):
    inputs = to_model_input(load_pixels(samples, size))
    return labels_of(samples), model.predict(inputs, batch_size=32, verbose=0)


def _config(args, splits, state, threshold, calibration, figures, averaged):
    selection = figures[splits.selection_name]
    chosen = (f"weights averaged over the {len(averaged)} epochs with the best {splits.selection_name} ROC AUC "
              f"({', '.join(map(str, averaged))} of {state['epoch']})" if averaged else
              f"early stopping on {splits.selection_name} ROC AUC (best epoch {state['best_epoch']} of {state['epoch']})")
    return {
        "name": f"pneumo-{args.architecture}-{args.image_size}",
        "architecture": args.architecture,
        "classes": list(CLASSES),
        "image_size": args.image_size,
        "preprocessing": f"greyscale; squash the whole image to {args.image_size}x{args.image_size} (bilinear); "
                         f"standardise per image to mean {TARGET_MEAN:g}, std {TARGET_STD:g}, clip to 0-255; "
                         f"three channels minus the VGG BGR mean {VGG_MEAN_BGR}",
        "threshold": threshold,
        "threshold_rule": THRESHOLD_RULE,
        "temperature": calibration[0],
        "class_bias": calibration[1],
        "gradcam_layer": GRADCAM_LAYERS[args.architecture],
        "description": f"{args.architecture} base at {args.image_size} px: blocks 1-{args.pretrained_blocks} start from "
                       f"'{args.pretrained}' weights, later blocks from scratch, blocks 1-{args.frozen_blocks} frozen; "
                       f"global average pooling, dropout {args.dropout}, 3-way softmax. Adam {args.learning_rate:g} "
                       f"with {args.decay:g} inverse-time decay, class-balanced imgaug augmentation, {chosen}."
                       + _joint_words(args),
        "pretrained": args.pretrained,
        "pretrained_blocks": args.pretrained_blocks,
        "frozen_blocks": args.frozen_blocks,
        "averaged_epochs": averaged,
        "data": {"train_images": len(splits.train), "selection_split": splits.selection_name,
                 **{f"{name}_images": len(samples) for name, samples in splits.reports.items()}},
        "validation": {k: selection[k] for k in ("accuracy", "roc_auc", "sensitivity", "specificity",
                                                 "bacterial_viral_auc", "ece")},
        "command": "python -m training.train " + shlex.join(a for a in sys.argv[1:] if a != "--resume"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_float16(model, path):
    """Save `model` as .keras with its float32 weights stored as float16.

    Keras casts them back to float32 on load; the probabilities move by about
    1e-3 at most, and the file halves (VGG16: 59 MB -> 30 MB).
    """
    path = Path(path)
    full = path.with_suffix(".float32.keras")
    inference_only = keras.models.clone_model(model)  # uncompiled: no optimizer state in the file
    inference_only.set_weights(model.get_weights())
    inference_only.save(full)
    with zipfile.ZipFile(full) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, _weights_to_float16(data) if name.endswith(".h5") else data)
    full.unlink()


def _weights_to_float16(h5_bytes):
    buffer = io.BytesIO()
    with h5py.File(io.BytesIO(h5_bytes), "r") as source, h5py.File(buffer, "w") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value

        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                data = item[()]
                target.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
            else:
                target.require_group(name)
            for key, value in item.attrs.items():
                target[name].attrs[key] = value

        source.visititems(copy)
    return buffer.getvalue()
