"""Training images per second on this machine: the shipped run's configuration
against the naive one (every layer trainable, 224 px), in one run.

    python benchmarks/training_speed.py [--steps 4] [--batch-size 16]

Each row times full training steps (augmentation, forward, backward, Adam)
on real-sized random inputs after one warm-up step.
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

from training.augment import BalancedBatches
from training.model import build_model, compile_model

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"batch {args.batch_size}, {args.steps} timed steps each\n")
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
