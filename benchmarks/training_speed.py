"""Training images per second on this machine: the shipped run's configuration
against the naive one (every layer trainable, 224 px), in one run; then the
augmentation pipeline alone and a whole `fit()` with 1 and N `--workers`.

    python benchmarks/training_speed.py [--steps 4] [--batch-size 16] [--workers 1,2]

Each row of the first table times full training steps (augmentation,
forward, backward, Adam) on real-sized random inputs after one warm-up step.
The second times only the augmented batches that Keras' PyDataset workers
hand over (224 px, batch 64): the most images per second this machine can
feed an accelerator. The third times `fit()` of the shipped configuration,
where the workers overlap augmentation with the training step.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: python benchmarks/...

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.children.augment import BalancedBatches
from training.children.model import build_model, compile_model

CONFIGURATIONS = [
    # name, image size, frozen blocks
    ("naive: all layers train, 224 px", 224, 0),
    ("all layers train, 128 px", 128, 0),
    ("shipped: blocks 1-3 frozen, 128 px", 128, 3),
]


def images_per_second(size, frozen_blocks, steps, batch_size):
    model = compile_model(build_model("vgg16", size, "none", 0, frozen_blocks))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (batch_size * 3, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(3), batch_size)
    batches = BalancedBatches(pixels, labels, batch_size, per_class=batch_size * (steps + 1) // 3 + 1)
    model.train_on_batch(*batches[0])  # warm-up: tracing and memory
    started = time.perf_counter()
    for step in range(1, steps + 1):
        model.train_on_batch(*batches[step])
    return steps * batch_size / (time.perf_counter() - started)


def pipeline_images_per_second(workers, batches=24, batch_size=64, size=224):
    """Augmented batches per second through Keras' own worker threads: an
    identity model's predict() draws them exactly as fit() does."""
    import keras

    dataset = _random_batches(size, batch_size, batches, workers)
    identity = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Identity()])
    identity.predict(_random_batches(size, batch_size, 2, workers), verbose=0)  # warm-up
    started = time.perf_counter()
    identity.predict(dataset, verbose=0)
    return batches * batch_size / (time.perf_counter() - started)


def fit_images_per_second(model, workers, steps, batch_size):
    size = model.input_shape[1]
    started = time.perf_counter()
    model.fit(_random_batches(size, batch_size, steps, workers), epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - started)


def _random_batches(size, batch_size, batches, workers):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (batch_size * 3, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(3), batch_size)
    return BalancedBatches(pixels, labels, batch_size, per_class=batch_size * batches // 3 + 1, workers=workers)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}", help="worker counts to compare, comma-separated")
    parser.add_argument("--workers-only", action="store_true", help="skip the configurations table")
    parser.add_argument("--fit-size", type=int, default=128, help="fit() table: image size (shipped: 128)")
    parser.add_argument("--fit-frozen-blocks", type=int, default=3, help="fit() table: frozen blocks (shipped: 3)")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"batch {args.batch_size}, {args.steps} timed steps each\n")
    if not args.workers_only:
        configurations_table(args)
    model = compile_model(build_model("vgg16", args.fit_size, "none", 0, args.fit_frozen_blocks))
    model.fit(_random_batches(args.fit_size, args.batch_size, 2, 1), epochs=1, verbose=0)  # warm-up: tracing
    frozen = f"blocks 1-{args.fit_frozen_blocks} frozen" if args.fit_frozen_blocks else "all layers train"
    print(f"\n| augmentation workers (threads) | augmented images/s, 224 px, batch 64 | fit(), {args.fit_size} px, "
          f"{frozen}, batch {args.batch_size}: images/s |")
    print("| --- | --- | --- |")
    for workers in worker_counts:
        feed = pipeline_images_per_second(workers)
        fit = fit_images_per_second(model, workers, args.steps, args.batch_size)
        print(f"| {workers} | {feed:.0f} | {fit:.1f} |", flush=True)


def configurations_table(args):
    print(f"| configuration | images/s | 5216-image epoch |")
    print(f"| --- | --- | --- |")
    rows = []
    for name, size, frozen in CONFIGURATIONS:
        speed = images_per_second(size, frozen, args.steps, args.batch_size)
        rows.append(speed)
        print(f"| {name} | {speed:.1f} | {5216 / speed / 60:.1f} min |", flush=True)
    print(f"\nshipped vs naive: {rows[-1] / rows[0]:.1f}x faster")


if __name__ == "__main__":
    main()
