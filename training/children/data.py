"""Reads the Kaggle/Mendeley chest X-ray layout and splits it by patient.

    DATA/train/{NORMAL,PNEUMONIA}/*.jpeg   required
    DATA/val/...  DATA/test/...            optional, same layout

The class comes from the file name: NORMAL/ files are NORMAL, PNEUMONIA/
files named *_bacteria_* or *_virus_* are BACTERIAL or VIRAL.
"""

import argparse
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.answers.classes import BACTERIAL, NORMAL, VIRAL
from pneumo.model.preprocess import to_pixels

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp"}
# Enough images for val/ to choose epochs and a threshold on its own.
MIN_VALIDATION_IMAGES = 100


class DataError(ValueError):
    """The data folder is missing, empty or laid out wrongly."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    patient: str


def label_of(path: Path) -> int:
    if path.parent.name == "NORMAL":
        return NORMAL
    name = path.name.lower()
    if "bacteria" in name:
        return BACTERIAL
    if "virus" in name:
        return VIRAL
    raise DataError(f"{path}: a PNEUMONIA image must say 'bacteria' or 'virus' in its name")


def patient_of(path: Path) -> str:
    """`person123_bacteria_4.jpeg` -> person123; `IM-0115-0001.jpeg` -> IM-0115."""
    match = re.match(r"(person\d+|(?:NORMAL2-)?IM-\d+)", path.name)
    return f"{path.parent.name}/{match.group(1) if match else path.stem}"


def scan_split(folder: Path) -> list[Sample]:
    """Every image of one split folder, with its class and patient."""
    missing = [c for c in ("NORMAL", "PNEUMONIA") if not (folder / c).is_dir()]
    if missing:
        raise DataError(f"{folder} needs the subfolders NORMAL/ and PNEUMONIA/; missing: {', '.join(missing)}")
    samples = [
        Sample(path, label_of(path), patient_of(path))
        for class_dir in ("NORMAL", "PNEUMONIA")
        for path in sorted((folder / class_dir).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    for class_dir in ("NORMAL", "PNEUMONIA"):
        if not any(s.path.parent.name == class_dir for s in samples):
            raise DataError(f"{folder / class_dir} holds no images (.jpeg, .jpg, .png or .webp)")
    return samples


def patient_split(samples, fraction, seed):
    """(rest, held_out): about `fraction` of the patients held out, stratified
    by class, deterministic under `seed`, no patient on both sides."""
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
    labels = [s.label for s in samples]
    groups = [s.patient for s in samples]
    rest, held = next(folds.split(np.zeros(len(samples)), labels, groups))
    return [samples[i] for i in rest], [samples[i] for i in held]


@dataclass
class Splits:
    """`train` fits the model; `selection` chooses epochs and the threshold."""

    train: list
    selection: list
    selection_name: str
    reports: dict  # every split to evaluate at the end: name -> samples


# Defaults of `python -m training.train --holdout-fraction --seed`: the split a run was made with.
HOLDOUT_FRACTION, SEED = 0.1, 0


def recorded_split(command: str) -> tuple[float, int]:
    """(holdout fraction, seed) of a run's recorded `python -m training.train ...` command
    (config.json's "command"), so that a later step rebuilds the run's own split.
    A command that does not say, or cannot be read, means the defaults."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--holdout-fraction", type=float, default=HOLDOUT_FRACTION)
    parser.add_argument("--seed", type=int, default=SEED)
    try:
        known, _ = parser.parse_known_args(shlex.split(command)[3:])  # after `python -m training.train`
    except (argparse.ArgumentError, ValueError, SystemExit):  # some argparse errors still exit in 3.11
        return HOLDOUT_FRACTION, SEED
    return known.holdout_fraction, known.seed


def recorded_splits(data_dir, config: dict) -> "Splits":
    """A run's own splits of `data_dir`, rebuilt from the training command its config.json recorded."""
    return load_splits(data_dir, *recorded_split(config.get("command", "")))


def load_splits(data_dir, holdout_fraction=HOLDOUT_FRACTION, seed=SEED) -> Splits:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    if not (data_dir / "train").is_dir():
        raise DataError(f"{data_dir} needs a train/ folder (with NORMAL/ and PNEUMONIA/)")
    train, holdout = patient_split(scan_split(data_dir / "train"), holdout_fraction, seed)
    reports = {"train_holdout": holdout}
    for name in ("val", "test"):
        if (data_dir / name).is_dir():
            reports[name] = scan_split(data_dir / name)
    val = reports.get("val", [])
    if len(val) >= MIN_VALIDATION_IMAGES:
        return Splits(train, val, "val", reports)
    return Splits(train, holdout, "train_holdout", reports)


def open_grey(path) -> Image.Image:
    """An image file as a greyscale PIL image, its file closed."""
    with Image.open(path) as image:
        return image.convert("L")


def load_pixels(samples, size, workers=1) -> np.ndarray:
    """uint8 (N, size, size) greyscale pixels of the samples, decoded by
    `workers` threads (Pillow releases the GIL while it decodes)."""
    out = np.empty((len(samples), size, size), dtype=np.uint8)

    def decode(i):
        with Image.open(samples[i].path) as image:
            out[i] = to_pixels(image, size)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(decode, range(len(samples))))
    return out


def labels_of(samples) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.int64)
