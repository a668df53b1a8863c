"""Fit the scope checks (pneumo/checks/scope.py) of a run folder, from one scoring pass.

    python -m training.checks.scope RUN_FOLDER [--data DATA] [--adult-data ADULT] [--seed 0] [--only-adult]

Also the last step of the training report. It scores, through the runtime
that will serve them (pneumo/model/predict.py), a sample of train/'s children,
the selection split (val/) and, when given, adult films, each with variants
(training/checks/variants.py): another framing and file, a phone photo of the
film. Then it fits

- ood.npz: the not-a-chest-X-ray feature check (training/checks/ood.py), on the
  children with their variants, so that photos of films and re-framed,
  re-compressed files count as chest X-rays;
- population.npz: the population check (training/checks/population.py), children
  against adults, every variant on both sides; its threshold comes from
  cross-validation, and population.json keeps the measured figures;
- adult.npz: the adult answer (training/adults/answer.py), where radiologists read
  some of the adult films; adult.json keeps its figures and whether it met
  the shipping rule;
- adult_opacity.npz: where on an adult film the opacity is (training/
  opacity.py), from the films radiologists boxed, for an adult answer that
  ships with its own trunk.

A run without adult films gets no population check, and then no chest
X-ray gets a verdict from it: it cannot tell whose film it is
(pneumo/checks/scope.py; the card says so).
"""

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.answers.classes import NORMAL
from pneumo.model.loading import load_model
from pneumo.checks.ood import statistics_reason
from pneumo.analysis import films_as_read
from pneumo.anatomy.location import lungs_or_assumed
from pneumo.answers.adult import adult_features
from pneumo.model.predict import lung_grid, model_outputs, trunk_maps
from pneumo.model.preprocess import preprocess
from pneumo.model.run_folder import (ADULT, ADULT_CHECK, ADULT_HELD_OUT, ADULT_OPACITY, ADULT_REPORT, OOD, POPULATION,
                               POPULATION_REPORT)

from training.adults import answer as adult
from training.adults.locked import open_films
from training.checks import ood
from training.adults import opacity
from training.checks import population
from training.report.card import rewrite_card
from training.children.data import IMAGE_SUFFIXES, load_splits, open_grey
from training.checks.variants import VARIANTS

ADULT_DIR_ENV = "PNEUMO_ADULT_DATA_DIR"
TRAIN_SAMPLE = 1200  # children of train/ in the fits: enough for linear models, minutes of scoring
MIN_FIT_IMAGES = 320  # below (a toy run) the fits are noise: no ood.npz or population.npz


@dataclass
class Scored:
    """One set of films, scored as served, in several variants (row i always the same film)."""

    outside: np.ndarray  # 1 for adult films
    groups: np.ndarray  # patient ids: folds never split a patient
    pneumonia: np.ndarray  # 1 pneumonia, 0 normal, -1 other findings (adults) / unknown
    variants: dict  # name -> Features
    files: list | None = None  # the films' file names (adults: to find their radiologists' readings)
    sources: np.ndarray | None = None  # each adult film's hospital ("NIH", "JSRT"): leave-one-source-out figures

    def __len__(self):
        return len(self.outside)

    def take(self, rows) -> "Scored":
        """The films `rows` alone, in every variant."""
        return Scored(self.outside[rows], self.groups[rows], self.pneumonia[rows],
                      {name: features.take(rows) for name, features in self.variants.items()},
                      None if self.files is None else [self.files[i] for i in rows],
                      None if self.sources is None else self.sources[rows])


def joined(first: Scored, second: Scored) -> Scored:
    """Two scored sets (the same variants) as one."""
    def both(a, b):
        return None if a is None or b is None else np.concatenate([a, b])

    variants = {name: Features(**{field: both(getattr(first.variants[name], field), getattr(features, field))
                                  for field in Features.__dataclass_fields__})
                for name, features in second.variants.items()}
    return Scored(both(first.outside, second.outside), both(first.groups, second.groups),
                  both(first.pneumonia, second.pneumonia), variants, [*first.files, *second.files],
                  both(first.sources, second.sources))


@dataclass
class Features:
    pooled: np.ndarray  # (N, C) for the not-a-chest-X-ray check
    regions: np.ndarray  # (N, cells * C) for the population check
    refused_by_statistics: np.ndarray  # (N,) bool: refused before any fitted check (pneumo/checks/ood.py)
    raw: np.ndarray  # (N, 3) the model's uncalibrated probabilities
    adult: np.ndarray  # (N, 2 C) the adult answer's features over the whole film (pneumo/answers/adult.py)
    adult_lungs: np.ndarray  # (N, 2 C) the same over the lung fields (where lungs usually lie if none are found)
    # (N, 2 C') the same of the adult trunk's maps over the lung fields; None without a trunk
    adult_trunk: np.ndarray | None = None

    def take(self, rows) -> "Features":
        return Features(**{field: None if getattr(self, field) is None else getattr(self, field)[rows]
                           for field in self.__dataclass_fields__})


def score(loaded, images, batch_size=32, adult_trunk=False) -> Features:
    """Decoded images -> their features and statistics verdicts, as pneumo.analysis computes them.
    adult_trunk: also the adult trunk's features, where the run folder has one (adult films only:
    they are what the adult answer is fitted on, and the trunk's pass is the slow part)."""
    parts = {name: [] for name in ("pooled", "regions", "raw", "adult", "adult_lungs", "adult_trunk")}
    refused = []
    for start in range(0, len(images), batch_size):
        films = [film.image for film in films_as_read(loaded, images[start:start + batch_size])[0]]  # as served
        lungs = [lungs_or_assumed(f) for f in films]  # the adult answer's lung fields (pneumo/model/predict.py)
        outputs = model_outputs(loaded, np.concatenate([preprocess(f, loaded.config["image_size"]) for f in films]))
        parts["pooled"].append(outputs.pooled)
        parts["regions"].append(outputs.regions)
        parts["raw"].append(outputs.raw)
        parts["adult"].append(adult_features(outputs.maps))
        parts["adult_lungs"].append(adult_features(outputs.maps, lung_grid(lungs, outputs.maps)))
        if adult_trunk and loaded.adult_trunk is not None:
            maps = trunk_maps(loaded.adult_trunk, films, outputs.shared)  # a branch continues this pass, as served
            parts["adult_trunk"].append(adult_features(maps, lung_grid(lungs, maps)))
        refused += [statistics_reason(f) is not None for f in films]
    joined = {name: np.concatenate(arrays) if arrays else None for name, arrays in parts.items()}
    return Features(refused_by_statistics=np.array(refused, bool), **joined)


def score_set(loaded, images, outside, groups, pneumonia, variants, seed) -> Scored:
    rng = np.random.default_rng(seed)
    adults = bool(outside)
    scored = {"original": score(loaded, images, adult_trunk=adults)}
    for name in variants:
        scored[name] = score(loaded, [VARIANTS[name](image, rng) for image in images], adult_trunk=adults)
    return Scored(np.full(len(images), outside), np.asarray(groups), np.asarray(pneumonia), scored)


def score_children(loaded, samples, variants, seed) -> Scored:
    images = [open_grey(s.path) for s in samples]
    return score_set(loaded, images, 0, [s.patient for s in samples], [int(s.label != NORMAL) for s in samples],
                     variants, seed)


def score_adults(loaded, folder, variants, seed, only_read=False) -> Scored:
    """ADULT/*.jpeg but the locked patients' (training/adults/locked.py), and labels.csv's `finding`: normal,
    pneumonia or other; `patient`: the folds' groups.
    only_read: only the films that radiologists read (all that the adult answer's fit uses)."""
    rows = adult.read_labels(folder)
    paths = open_films(folder, sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
    if only_read:
        paths = [p for p in paths if rows.get(p.name, {}).get("rsna_class")]
    code = {"pneumonia": 1, "normal": 0}
    patients = [rows.get(p.name, {}).get("patient") or p.stem for p in paths]  # several films of one patient
    scored = score_set(loaded, [open_grey(p) for p in paths], 1, patients,
                       [code.get(rows.get(p.name, {}).get("finding"), -1) for p in paths], variants, seed)
    scored.files = [p.name for p in paths]
    scored.sources = np.full(len(paths), "NIH")
    return scored


def jsrt_halves(folder) -> tuple[list, list]:
    """The JSRT films (images/*.png, one per patient) in two halves, every other film by name: the adult
    answer learns the first as films without pneumonia, the second only measures its false alarms at
    another hospital (training/report/locked_split.py)."""
    paths = sorted((Path(folder) / "images").glob("*.png"))
    return paths[::2], paths[1::2]


def score_jsrt(loaded, folder, variants, seed, paths=None) -> Scored:
    """The JSRT films of a lung_masks folder (images/*.png; Japan, one film per patient, no pneumonia), or
    `paths` of them: a second adult hospital for the population check, so that it cannot learn "NIH" for "adult"."""
    paths = sorted((Path(folder) / "images").glob("*.png")) if paths is None else paths
    scored = score_set(loaded, [open_grey(p) for p in paths], 1, [f"jsrt-{p.stem}" for p in paths],
                       np.full(len(paths), -1), variants, seed)
    scored.files = [p.name for p in paths]
    scored.sources = np.full(len(paths), "JSRT")
    return scored


@dataclass
class Sets:
    train: Scored  # a sample of train/'s children
    selection: Scored  # val/ (or the patients held out of train/)
    adults: Scored | None


def score_sets(loaded, splits, adult_dir, seed=0, log=print, jsrt_dir=None) -> Sets:
    """Score a sample of train/, the selection split and the adult films (if any; JSRT's too), with variants."""
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(splits.train), min(TRAIN_SAMPLE, len(splits.train)), replace=False))
    log(f"scope checks: scoring {len(picks)} train/ and {len(splits.selection)} {splits.selection_name} children"
        + (f" and the adult films of {adult_dir}" if adult_dir else "")
        + (f" and {jsrt_dir}" if adult_dir and jsrt_dir else "") + ", with variants")
    adults = score_adults(loaded, adult_dir, ("site", "photo", "unseen"), seed + 2) if adult_dir else None
    if adults is not None and jsrt_dir:
        adults = joined(adults, score_jsrt(loaded, jsrt_dir, ("site", "photo", "unseen"), seed + 3))
    return Sets(score_children(loaded, [splits.train[i] for i in picks], ("site", "photo"), seed),
                score_children(loaded, splits.selection, ("site", "photo", "unseen"), seed + 1), adults)


def fit_and_save(run_folder, data_dir, adult_dir=None, seed=0, log=print, jsrt_dir=None) -> dict | None:
    """Fit both checks into RUN_FOLDER; returns the population figures (None without adults). JSRT films
    (`jsrt_dir`), when given, are a second adult hospital for the population check and the adult feature check."""
    out = Path(run_folder)
    for name in (OOD, POPULATION, POPULATION_REPORT, ADULT, ADULT_REPORT, ADULT_CHECK, ADULT_OPACITY):
        (out / name).unlink(missing_ok=True)  # scoring must not pass through an earlier fit
    splits = load_splits(data_dir, seed=seed)
    if len(splits.train) < MIN_FIT_IMAGES:
        log(f"scope checks: only {len(splits.train)} training images, no fitted checks (image statistics only)")
        return None
    loaded = load_model(out)
    sets = score_sets(loaded, splits, adult_dir, seed, log, jsrt_dir)
    chest = fit_chest_xray_check(sets, out, log)
    if sets.adults is None:
        log("scope checks: no adult films (--adult-data), so no population check: no film will get a verdict")
        return None
    report = fit_population_check(loaded, sets, chest, out, seed, log)
    fit_adult_answer(sets.adults, adult_dir, out, seed, log, jsrt_tuning(loaded, jsrt_dir, seed, sets.adults))
    return report


def jsrt_tuning(loaded, jsrt_dir, seed, scored=None):
    """The JSRT half that fits may see, scored as served (adult trunk included), or None: taken from
    `scored` (adult films, JSRT's among them) when given, else scored here."""
    if not jsrt_dir:
        return None
    paths = jsrt_halves(jsrt_dir)[0]
    if scored is None:
        return score_jsrt(loaded, jsrt_dir, (), seed + 3, paths=paths)
    names = {path.name for path in paths}
    return scored.take([i for i, (name, source) in enumerate(zip(scored.files, scored.sources))
                        if source == "JSRT" and name in names])


def fit_adult_answer(adults, adult_dir, out, seed, log, other_hospital=None):
    """adult.npz and adult.json (training/adults/answer.py) from scored adult films, where radiologists
    read some of them; without readings there is nothing to validate on, so no adult answer.
    `other_hospital`: the JSRT half that fits may see, learnt as films without pneumonia."""
    for name in (ADULT, ADULT_REPORT, ADULT_CHECK, ADULT_OPACITY):
        (out / name).unlink(missing_ok=True)
    labels = adult.read_labels(adult_dir)
    if not np.isin(adult.readings(adults, labels), (adult.OPACITY, adult.NORMAL)).any():
        log("adult answer: no radiologist readings in labels.csv (rsna_class), so none: adults stay outside")
        return None
    joint = Path(out) / ADULT_HELD_OUT  # a joint run: judge its own read-out on the patients it held out
    trained = json.loads(joint.read_text()) if joint.is_file() else None
    report = adult.fit_and_save(out, adults, labels, seed, log, trained, other_hospital)
    opacity.fit_and_save(out, adult_dir, log)  # adults' heatmap: it reads the trunk of a shipped answer
    return report


def refit_adult_answer(run_folder, adult_dir, seed=0, log=print, jsrt_dir=None):
    """Only the adult answer, for a run whose scope checks stay as they are."""
    loaded = load_model(run_folder)
    adults = score_adults(loaded, adult_dir, adult.FITTED[1:], seed + 2, only_read=True)
    return fit_adult_answer(adults, adult_dir, Path(run_folder), seed, log, jsrt_tuning(loaded, jsrt_dir, seed))


def fit_chest_xray_check(sets, out, log):
    """ood.npz from every fitted variant of train/'s children. Adults stay out: with
    them the check let more non-X-rays through (measured: 95% refused instead of 100%,
    photos of printed non-X-rays 77% instead of 82%); the population check gates adults."""
    xrays = [sets.train.variants[name] for name in population.FITTED]
    selection = [sets.selection.variants[name] for name in population.FITTED]
    check = ood.fit_check(np.concatenate([f.pooled[~f.refused_by_statistics] for f in xrays]),
                          np.concatenate([f.pooled[~f.refused_by_statistics] for f in selection]))
    check.save(out / OOD)
    refused = {name: float(np.mean(check.distance(f.pooled) > check.threshold)) for name, f in
               sets.selection.variants.items()}
    log(f"not-a-chest-X-ray check: threshold {check.threshold:.2f}; refuses of the selection split {refused}")
    return check


def fit_population_check(loaded, sets, chest, out, seed, log) -> dict:
    """population.npz and population.json (threshold by cross-validation); `chest`
    is the not-a-chest-X-ray check just fitted, which refuses images before this one."""
    measured = population.cross_validate(sets, chest, seed=seed)
    check = population.fit(population.rows(sets, chest), seed=seed)
    check.threshold = measured["threshold"]
    figures = population.adult_model_figures(loaded, sets.adults)
    check.adult_sensitivity, check.adult_auc = figures["sensitivity"], figures["roc_auc"]
    check.save(out / POPULATION)
    report = {"threshold": check.threshold, "adult_model": figures, "cross_validated": measured["gated"],
              "cross_validated_at": "each film at a threshold chosen without its fold: "
                                    + ", ".join(f"{t:.4f}" for t in measured["fold_thresholds"]),
              "adult_sources": population.source_counts(sets.adults),
              "one_source_left_out": population.leave_one_source_out(sets, chest, seed)}
    (out / POPULATION_REPORT).write_text(json.dumps(report, indent=2))
    log(f"population check: threshold {check.threshold:.3f}; cross-validated {json.dumps(measured['gated'])}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.checks.scope", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="the run folder whose model computes the features")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"),
                   help="children: train/ and val/ [PNEUMO_DATA_DIR]")
    p.add_argument("--adult-data", default=os.environ.get(ADULT_DIR_ENV),
                   help=f"adult frontal chest X-rays (and labels.csv) for the population check [{ADULT_DIR_ENV}]")
    p.add_argument("--jsrt", default=os.environ.get("PNEUMO_JSRT_DIR"),
                   help="a lung_masks folder (images/*.png, JSRT: adults of another hospital) for the population "
                        "check to learn adults from more than one hospital, and whose first half the adult answer "
                        "learns as films without pneumonia [PNEUMO_JSRT_DIR]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-adult", action="store_true",
                   help="refit only the adult answer (adult.npz), keeping the run's scope checks")
    args = p.parse_args(argv)
    if args.only_adult:
        if not args.adult_data:
            p.error("--only-adult needs --adult-data")
        refit_adult_answer(args.run_folder, args.adult_data, args.seed, jsrt_dir=args.jsrt)
    else:
        fit_and_save(args.run_folder, args.data, args.adult_data, args.seed, jsrt_dir=args.jsrt)
    rewrite_card(args.run_folder)  # the card describes the checks and the adult answer


if __name__ == "__main__":
    main()
