"""Fit the population check (pneumo/population.py) and measure it honestly.

    python -m training.population RUN_FOLDER [--data DATA] [--adult-data ADULT] [--seed 0]

Inside: children's X-rays of train/ (a sample) and val/ (the selection
split: the patients held out of train/ when val/ is too small). Outside: the adult
films of ADULT (600 NIH films). Every adult film comes from one hospital, so
a check could learn "NIH versus Guangzhou" (scanner, file format, framing)
instead of "adult versus young child". Two guards:

- every image, child or adult, is also shown to the fit in variants that
  randomise what differs between the two sources but not between ages:
  framing (crop and aspect ratio), resolution and JPEG compression, gamma,
  and phone photos of the film (training/photos.py through pneumo/photo.py,
  as served). What the variants change cannot separate the classes;
- a strongly regularised linear model on the network's own pooled features,
  which are about anatomy at 128 px rather than file details.

benchmarks/scope_eval.py reports the check on adult films re-rendered in
ways the fit never saw (histogram equalisation, collimation borders, a
tight crop), a proxy for other hospitals. val/ and the adult films are
scored by cross-validation: no image is scored by a check fitted on it.
"""

import argparse
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.analysis import analyse_many
from pneumo.classes import NORMAL
from pneumo.loading import load_model
from pneumo.photo import film_of
from pneumo.population import FILE, PopulationCheck
from pneumo.scope import NOT_CHEST_XRAY, assess_scope
from pneumo.predict import model_outputs
from pneumo.preprocess import preprocess

from .data import load_splits
from .photos import photo_of_film

REPORT_FILE = "population.json"
ADULT_DIR_ENV = "PNEUMO_ADULT_DATA_DIR"
DEFAULT_ADULT_DIR = "../shared/data/adult_cxr"
TRAIN_SAMPLE = 1200  # children of train/ in the fit: enough for a linear model, a few minutes of features
C = 0.05  # inverse L2 strength: strong, so that many weak anatomical cues beat a few file-format ones
FOLDS = 5
FIT_VARIANTS = ("original", "site", "photo")  # "unseen" is kept for measuring
GATED_CHILDREN = 0.01  # the threshold lets at most this share of val/ children (out of fold) lose their verdict


@dataclass
class Images:
    """Decoded images with what the fit needs to know about each."""

    images: list  # PIL images, as decoded
    outside: np.ndarray  # 1 for adult films
    groups: np.ndarray  # patient ids, so that folds never split a patient
    pneumonia: np.ndarray  # adults: 1 pneumonia, 0 normal, -1 other findings; children: their label != NORMAL


def adult_films(folder) -> Images:
    rows = {}
    labels_csv = Path(folder) / "labels.csv"
    if labels_csv.is_file():
        import csv

        with open(labels_csv) as f:
            rows = {row["file"]: row["finding"] for row in csv.DictReader(f)}
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    finding = {"pneumonia": 1, "normal": 0}
    return Images([_open(p) for p in paths], np.ones(len(paths), int), np.array([p.stem for p in paths]),
                  np.array([finding.get(rows.get(p.name), -1) for p in paths]))


def children(samples) -> Images:
    return Images([_open(s.path) for s in samples], np.zeros(len(samples), int),
                  np.array([s.patient for s in samples]), np.array([int(s.label != NORMAL) for s in samples]))


def _open(path):
    with Image.open(path) as image:
        return image.convert("L")


# --- variants: what differs between sources, never between ages ---------------------------


def site_variant(image: Image.Image, rng) -> Image.Image:
    """Another framing, resolution, compression and exposure of the same film."""
    w, h = image.size
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    share = rng.uniform(0.8, 1.0)
    cw, ch = min(w, int(w * share * np.sqrt(aspect))), min(h, int(h * share / np.sqrt(aspect)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    side = int(rng.integers(256, 1024))
    out = out.resize((side, max(64, int(side * ch / cw))), Image.Resampling.BILINEAR)
    gamma = rng.uniform(0.7, 1.4)
    out = out.point(lambda v: 255 * (v / 255) ** gamma)
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=int(rng.integers(60, 96)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def unseen_site_variant(image: Image.Image, rng) -> Image.Image:
    """Re-renderings the fit never sees (for the benchmark): equalised
    histogram, a collimation border, or a tight crop on the chest."""
    kind = rng.integers(3)
    if kind == 0:
        return ImageOps.equalize(image)
    if kind == 1:
        border = int(min(image.size) * rng.uniform(0.04, 0.1))
        return ImageOps.expand(image.crop((border, border, image.width - border, image.height - border)),
                               border, fill=int(rng.choice([0, 255])))
    w, h = image.size
    return image.crop((int(w * 0.1), int(h * 0.08), int(w * 0.9), int(h * 0.92)))


# --- features and the fit ------------------------------------------------------------------


@dataclass
class Variant:
    pooled: np.ndarray  # (N, C) the served model's pooled features
    not_chest_xray: np.ndarray  # (N,) refused before the population check (pneumo/scope.py)


def score_images(loaded, images, batch_size=32) -> Variant:
    """Pooled features and the not-a-chest-X-ray verdict of decoded images, as served."""
    size = loaded.config["image_size"]
    checks_only = _WithoutPopulation(loaded)
    pooled, refused = [], []
    for i in range(0, len(images), batch_size):
        films = [film_of(image) for image in images[i:i + batch_size]]
        features = model_outputs(loaded, np.concatenate([preprocess(f.image, size) for f in films])).pooled
        pooled.append(features)
        refused += [assess_scope(f, p, checks_only).code == NOT_CHEST_XRAY for f, p in zip(films, features)]
    return Variant(np.concatenate(pooled), np.array(refused, bool))


class _WithoutPopulation:
    """The served model's checks, less the population check being fitted or measured."""

    def __init__(self, loaded):
        self.ood_check, self.population_check = loaded.ood_check, None


def score_set(loaded, data: Images, seed, variants=("site", "photo")) -> dict:
    """{"original": Variant, and one Variant per named variant}, row i always the same film."""
    rng = np.random.default_rng(seed)
    make = {"site": site_variant, "photo": lambda im, r: photo_of_film(im, r), "unseen": unseen_site_variant}
    out = {"original": score_images(loaded, data.images)}
    for name in variants:
        out[name] = score_images(loaded, [make[name](image, rng) for image in data.images])
    return out


def fit(features: list[np.ndarray], outside: list[np.ndarray], seed=0) -> PopulationCheck:
    """A logistic regression on standardised log1p features; threshold left at 0.5 (set by calibrate_threshold)."""
    x = np.log1p(np.maximum(np.concatenate(features), 0.0))
    y = np.concatenate(outside)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit((x - mean) / scale, y)
    return PopulationCheck(mean, scale, model.coef_[0], float(model.intercept_[0]), threshold=0.5)


def training_rows(parts, rows=None):
    """(feature arrays, outside arrays) for a fit: the fitted variants of the chosen
    rows of each (Images, variants) part, less those refused before the population check."""
    xs, ys = [], []
    for i, (data, variants) in enumerate(parts):
        chosen = np.arange(len(data.outside)) if rows is None else rows[i]
        for variant in (v for name, v in variants.items() if name in FIT_VARIANTS):
            keep = chosen[~variant.not_chest_xray[chosen]]
            xs.append(variant.pooled[keep])
            ys.append(data.outside[keep])
    return xs, ys


def cross_validate(train_part, val_part, adult_part, seed=0) -> dict:
    """Out-of-fold P(outside) of every val/ child and adult film, per variant:
    {name: (children's scores, adults' scores)}. Each fold's check is fitted on
    train/'s sample plus the other folds; patients never straddle folds."""
    (val, val_variants), (adults, adult_variants) = val_part, adult_part
    n = len(val.outside)
    outside = np.concatenate([val.outside, adults.outside])
    groups = np.concatenate([val.groups, adults.groups])
    scores = {name: np.empty(len(outside)) for name in val_variants}
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for fit_rows, held in folds.split(np.zeros(len(outside)), outside, groups):
        rows = [np.arange(len(train_part[0].outside)), fit_rows[fit_rows < n], fit_rows[fit_rows >= n] - n]
        check = fit(*training_rows([train_part, val_part, adult_part], rows), seed=seed)
        for name in scores:
            both = np.concatenate([val_variants[name].pooled, adult_variants[name].pooled])
            scores[name][held] = check.outside_probability(both[held])
    return {name: (s[:n], s[n:]) for name, s in scores.items()}


def threshold_for(children_scores) -> float:
    """The lowest P(outside) that gates at most GATED_CHILDREN of the children."""
    return float(np.quantile(children_scores, 1 - GATED_CHILDREN, method="higher")) + 1e-9


def adult_model_figures(loaded, adults: Images) -> dict:
    """What the pneumonia model answers on adult films (normal vs pneumonia): why the check exists."""
    keep = adults.pneumonia >= 0
    analyses = analyse_many([im for im, k in zip(adults.images, keep) if k], loaded)
    sick = np.array([(a.research or {"pneumonia_probability": a.pneumonia_probability})["pneumonia_probability"]
                     for a in analyses])
    truth = adults.pneumonia[keep]
    said = sick >= loaded.config["threshold"]
    return {"adult_films": int(keep.sum()), "adult_pneumonia": int(truth.sum()),
            "sensitivity": float(said[truth == 1].mean()), "specificity": float((~said[truth == 0]).mean()),
            "roc_auc": float(roc_auc_score(truth, sick))}


@dataclass
class Measured:
    parts: list  # (Images, {variant: Variant}) for train/'s sample, val/, the adult films
    cross_validated: dict  # variant -> (val/ children's P(outside), adults' P(outside)), out of fold
    threshold: float


def measure(loaded, data_dir, adult_dir, seed=0, log=print) -> Measured:
    """Score the three sets (with variants) and cross-validate the check on them."""
    splits = load_splits(data_dir, seed=seed)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(splits.train), min(TRAIN_SAMPLE, len(splits.train)), replace=False))
    sets = [(children([splits.train[i] for i in picks]), ("site", "photo")),
            (children(splits.selection), ("site", "photo", "unseen")),
            (adult_films(adult_dir), ("site", "photo", "unseen"))]
    log(f"population check: scoring {', '.join(str(len(d.images)) for d, _ in sets)} films "
        "(train/ sample, val/, adults) and their variants")
    parts = [(data, score_set(loaded, data, seed + i, variants)) for i, (data, variants) in enumerate(sets)]
    cross_validated = cross_validate(*parts, seed=seed)
    return Measured(parts, cross_validated, threshold_for(cross_validated["original"][0]))


def fit_and_save(run_folder, data_dir, adult_dir, seed=0, log=print) -> dict:
    """Fit on everything, threshold from cross-validation; write RUN/population.npz
    and RUN/population.json (the measured figures), which it returns."""
    (Path(run_folder) / FILE).unlink(missing_ok=True)  # the features must not pass through an old check
    loaded = load_model(run_folder)
    measured = measure(loaded, data_dir, adult_dir, seed, log)
    check = fit(*training_rows(measured.parts), seed=seed)
    check.threshold = measured.threshold
    figures = adult_model_figures(loaded, measured.parts[2][0])
    check.adult_sensitivity, check.adult_auc = figures["sensitivity"], figures["roc_auc"]
    check.save(Path(run_folder) / FILE)
    report = {"threshold": measured.threshold, "adult_model": figures,
              "cross_validated": {name: {"val_children_gated": float(np.mean(c >= measured.threshold)),
                                         "adults_gated": float(np.mean(a >= measured.threshold))}
                                  for name, (c, a) in measured.cross_validated.items()}}
    (Path(run_folder) / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log(f"population check: threshold {measured.threshold:.3f}; cross-validated {json.dumps(report['cross_validated'])}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.population", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="the run folder whose model computes the features")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="children: train/ and val/ [PNEUMO_DATA_DIR]")
    p.add_argument("--adult-data", default=os.environ.get(ADULT_DIR_ENV, DEFAULT_ADULT_DIR),
                   help=f"adult frontal chest X-rays (and labels.csv) [{ADULT_DIR_ENV}]")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    fit_and_save(args.run_folder, args.data, args.adult_data, args.seed)


if __name__ == "__main__":
    main()
