"""Fit the turned-or-inverted-film check (pneumo/inputs/orientation.py) into a run folder:

    python -m training.checks.orientation RUN_FOLDER [--data DATA] [--adult-data ADULT] [--seed 0]

Films: a sample of train/'s children and, when given, the adult films (adults
will be answered too), each in all 8 ways (4 turns x 2 polarities). A fifth
of the patients of each is held out of the fit (no patient on both sides).
The check is a multinomial logistic regression on each film's thumbnail.
Its threshold is the lowest probability at which at most MAX_UPRIGHT_TURNED
of the held-out upright films would be turned (at least MIN_THRESHOLD): a
film that came right must reach the model as it came. Not zero: the adult
collection holds films that were stored upside down (nih_00003490_011 is
one), which the check rightly turns. The held-out figures are logged.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from pneumo.inputs.orientation import SIDE, UPRIGHT, WAYS, OrientationCheck, thumbnail
from pneumo.model.run_folder import ORIENTATION

from training.children.data import patient_split, scan_split
from training.adults.locked import open_rows

CHILDREN = 2400  # films of train/ sampled (x 8 ways): plenty for 1024 weights per way
HELD_OUT = 0.2
MIN_THRESHOLD = 0.9
MAX_UPRIGHT_TURNED = 0.005
REGULARISATION = 1.0  # sklearn's C (held out: 0.1 restored fewer altered films, and turned no fewer upright ones)


def thumbnails_of(paths) -> np.ndarray:
    """(N, SIDE * SIDE) upright thumbnails; JPEGs are decoded at a reduced scale (draft), as fast as it gets."""
    out = np.empty((len(paths), SIDE * SIDE), np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            image.draft("L", (SIDE * 8, SIDE * 8))
            out[i] = thumbnail(image)
    return out


def all_ways(upright: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, SIDE * SIDE) upright thumbnails -> (8N, SIDE * SIDE) in every way of WAYS, and the way of each row.
    Turning and inverting commute with the thumbnail (a box average, standardised): done on the thumbnails."""
    square = upright.reshape(-1, SIDE, SIDE)
    rows, ways = [], []
    for way, (turn, inverted) in enumerate(WAYS):
        turned = np.rot90(square, k=turn // 90, axes=(1, 2))  # counter-clockwise, as PIL's rotate
        rows.append((-turned if inverted else turned).reshape(len(upright), -1))
        ways.append(np.full(len(upright), way))
    return np.concatenate(rows), np.concatenate(ways)


def children(data_dir, seed) -> tuple[list, list]:
    """(fit, held out) paths of a sample of train/, split by patient."""
    samples = scan_split(Path(data_dir) / "train")
    rng = np.random.default_rng(seed)
    samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:CHILDREN])]
    fit, held = patient_split(samples, HELD_OUT, seed)
    return [s.path for s in fit], [s.path for s in held]


def adults(adult_dir, seed) -> tuple[list, list]:
    """(fit, held out) paths of the adult films (the locked patients' aside), split by labels.csv's patient."""
    folder = Path(adult_dir)
    patient = {name: row["patient"] for name, row in open_rows(folder).items()}
    paths = sorted(folder / name for name in patient if (folder / name).is_file())
    split = GroupShuffleSplit(n_splits=1, test_size=HELD_OUT, random_state=seed)
    fit, held = next(split.split(paths, groups=[patient[p.name] for p in paths]))
    return [paths[i] for i in fit], [paths[i] for i in held]


def fit_check(fit_paths, held_paths, seed=0, log=print) -> OrientationCheck:
    x, y = all_ways(thumbnails_of(fit_paths))
    model = LogisticRegression(C=REGULARISATION, max_iter=2000, random_state=seed).fit(x, y)
    check = OrientationCheck(model.coef_, model.intercept_, MIN_THRESHOLD)
    check.threshold = threshold_for(check, thumbnails_of(held_paths))
    return check


def threshold_for(check, held_upright) -> float:
    """The lowest cut at which at most MAX_UPRIGHT_TURNED of the held-out upright films are turned
    (at least MIN_THRESHOLD)."""
    p = check.probabilities(held_upright)
    turned = np.sort(np.where(p.argmax(axis=1) != UPRIGHT, p.max(axis=1), 0.0))[::-1]
    allowed = int(MAX_UPRIGHT_TURNED * len(turned))  # this many may be turned; the next one may not
    return float(max(MIN_THRESHOLD, np.nextafter(turned[allowed], 1.0)))


def measure(check, paths) -> dict:
    """Held-out figures: upright films turned (false), altered films turned back right / wrong / left."""
    x, y = all_ways(thumbnails_of(paths))
    found = np.array([_way(p, check.threshold) for p in check.probabilities(x)])
    upright, altered = y == UPRIGHT, y != UPRIGHT
    return {"films": len(paths), "upright_turned": float(np.mean(found[upright] != UPRIGHT)),
            "altered_restored": float(np.mean(found[altered] == y[altered])),
            "altered_wrong_way": float(np.mean((found[altered] != y[altered]) & (found[altered] != UPRIGHT))),
            "altered_left": float(np.mean(found[altered] == UPRIGHT))}


def _way(p, threshold):
    way = int(np.argmax(p))
    return way if way != UPRIGHT and p[way] >= threshold else UPRIGHT


def fit_and_save(run_folder, data_dir, adult_dir=None, seed=0, log=print) -> OrientationCheck:
    kids_fit, kids_held = children(data_dir, seed)
    grown_fit, grown_held = adults(adult_dir, seed) if adult_dir else ([], [])
    check = fit_check(kids_fit + grown_fit, kids_held + grown_held, seed, log)
    check.save(Path(run_folder) / ORIENTATION)
    log(f"{ORIENTATION}: threshold {check.threshold:.4f}; held out, children: {measure(check, kids_held)}"
        + (f"; adults: {measure(check, grown_held)}" if grown_held else ""))
    return check


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.checks.orientation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="the run folder to write orientation.npz into")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="the children's data folder, with train/ [PNEUMO_DATA_DIR]")
    p.add_argument("--adult-data", default=os.environ.get("PNEUMO_ADULT_DATA_DIR"),
                   help="adult frontal chest X-rays and their labels.csv [PNEUMO_ADULT_DATA_DIR]")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    fit_and_save(args.run_folder, args.data, args.adult_data, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
