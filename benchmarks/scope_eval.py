"""Who gets a verdict? The scope checks (pneumo/checks/scope.py) measured per set.

    python benchmarks/scope_eval.py [--model RUN_FOLDER] [--data ../shared/data/chest_xray]
                                    [--adult-data ../shared/data/adult_cxr] [--seed 0] [--served-only]

Sets, and how each is scored so that no image meets a check fitted on it:

- val/ children and the adult films: cross-validated (training/checks/population.py:
  five folds by patient, each scored by a check fitted without it), with
  phone photos of the films and, for the adults, re-renderings the fit never
  saw (a proxy for other hospitals);
- the patients held out of train/ (never in the fit) and phone photos of
  their films: the run folder's own check, through pneumo.analysis;
- non-X-rays (benchmarks/ood_eval.py's offline corpus): the same.

Then what the pneumonia model would have said on the adult films without the
check: sensitivity, specificity and ROC AUC at its threshold, by NIH's text-mined
labels (adult.json's `child_model_roc_auc` is the figure on radiologists' readings).

The cross-validated rows judge each film at a threshold chosen without its fold
(training/checks/population.py): the shipped threshold was chosen on these very
scores, so at it the val/ children's share would be the target by construction.
Targets: adults >= 90% no verdict; val/ children <= 2% lose theirs; photos
of children's films >= 80% keep theirs; non-X-rays >= 95% refused; the
not-a-chest-X-ray check refuses <= 1% of real children's X-rays.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ood_eval import load as load_non_xray, non_xrays  # noqa: E402

from pneumo.analysis import analyse_many  # noqa: E402
from pneumo.model.loading import BUNDLED_DIR, load_model  # noqa: E402
from pneumo.checks.scope import NOT_CHEST_XRAY, OK, OUTSIDE_POPULATION  # noqa: E402
from training.checks import population  # noqa: E402
from training.checks import scope  # noqa: E402
from training.children.data import load_splits  # noqa: E402
from training.checks.photos import photo_of_film  # noqa: E402

VARIANT_NAMES = {"original": "", "photo": ", phone photos", "site": ", re-framed, re-compressed",
                 "unseen": ", re-rendered unlike any fit (other-hospital proxy)"}


def cross_validated_rows(sets, chest, measured):
    """(name, scopes) for the selection split's children and the adults, out of fold, per variant; each film
    judged at a threshold chosen without its fold (the shipped threshold was chosen on these very scores)."""
    for variant, (children, adults) in measured["scores"].items():
        for label, scored, scores, thresholds in (("val/ children", sets.selection, children, measured["thresholds"][0]),
                                                  ("adult films", sets.adults, adults, measured["thresholds"][1])):
            refused = ~population.reaches_check(scored.variants[variant], chest)
            yield label + VARIANT_NAMES[variant], scopes_of(refused, scores, thresholds)


def scopes_of(refused, scores, threshold):
    return np.where(refused, NOT_CHEST_XRAY, np.where(scores >= threshold, OUTSIDE_POPULATION, OK))


def served_rows(loaded, data_dir, seed):
    """(name, scopes) through pneumo.analysis with the run folder's own checks."""
    from PIL import Image

    holdout = []
    for sample in load_splits(data_dir, seed=seed).reports["train_holdout"]:
        with Image.open(sample.path) as image:
            holdout.append(image.convert("L"))
    rng = np.random.default_rng(seed + 100)  # not the fit's photos
    analyses = analyse_many(holdout, loaded)
    # Children that no fit saw (neither the model's, nor the checks', nor a threshold's), read as adults'
    # (an adult's film gets the adult answer, so some of these are verdicts in the table below).
    routed = [a.checks["adult_probability"] >= a.checks["adult_threshold"] for a in analyses
              if "adult_probability" in a.checks]
    print(f"train/ held-out patients routed as adults by the shipped check: {np.mean(routed):.1%} of "
          f"{len(routed)} that reached it ({len(holdout)} films)\n")
    yield "train/ held-out patients", [a.scope for a in analyses]
    photos = [photo_of_film(image, rng) for image in holdout]
    yield "train/ held-out patients, phone photos", [a.scope for a in analyse_many(photos, loaded)]
    images = [load_non_xray(item) for _, _, item in non_xrays()]
    yield "non-X-rays (photos, documents, CT/MR, noise...)", [a.scope for a in analyse_many(images, loaded)]
    photos = [photo_of_film(image.convert("L"), rng) for image in images]
    yield "phone photos of those non-X-rays", [a.scope for a in analyse_many(photos, loaded)]


def print_scope_table(rows):
    print("| set | images | verdict | not a chest X-ray | outside the population |")
    print("| --- | --- | --- | --- | --- |")
    for name, scopes in rows:
        scopes = np.asarray(scopes)
        shares = [np.mean(scopes == code) for code in (OK, NOT_CHEST_XRAY, OUTSIDE_POPULATION)]
        print(f"| {name} | {len(scopes)} | " + " | ".join(f"{s:.1%}" for s in shares) + " |")


def print_adult_model(figures):
    print(f"\nWithout the check, on {figures['adult_films']} adult films ({figures['adult_pneumonia']} pneumonia, "
          f"the others normal, by NIH labels mined from report text, not radiologists' readings: adult.json's "
          f"child_model_roc_auc is the figure on those), the pneumonia model at its threshold:")
    print("| sensitivity | specificity | ROC AUC |\n| --- | --- | --- |")
    print(f"| {figures['sensitivity']:.2f} | {figures['specificity']:.2f} | {figures['roc_auc']:.2f} |")


def parse_args(description):
    """The options this benchmark and benchmarks/adult_eval.py share."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_DIR), help="run folder (with its ood.npz and population.npz)")
    p.add_argument("--data", default=os.environ.get("PNEUMO_DATA_DIR", "../shared/data/chest_xray"))
    p.add_argument("--adult-data", default=os.environ.get(scope.ADULT_DIR_ENV, "../shared/data/adult_cxr"))
    p.add_argument("--seed", type=int, default=0, help="the seed the run's checks were fitted with")
    p.add_argument("--served-only", action="store_true",
                   help="scope_eval.py: only the rows the run folder's own checks serve (held-out train/, photos, "
                        "non-X-rays); the cross-validated ones are in its population.json, from the fit")
    return p.parse_args()


def score_and_cross_validate(args):
    """One scoring pass of every set with its variants, and the population check's cross-validation.
    The not-a-chest-X-ray check was fitted on all of these sets: only the population check is cross-validated."""
    loaded = load_model(args.model)
    splits = load_splits(args.data, seed=args.seed)
    sets = scope.score_sets(loaded, splits, args.adult_data, args.seed, log=lambda m: print(m, file=sys.stderr))
    return loaded, splits, sets, population.cross_validate(sets, loaded.ood_check, seed=args.seed)


def main():
    args = parse_args(__doc__)
    if args.served_only:
        print_scope_table(served_rows(load_model(args.model), args.data, args.seed))
        return
    loaded, _, sets, measured = score_and_cross_validate(args)
    chest = loaded.ood_check
    print(f"Population check threshold (from cross-validation): P(outside) >= {measured['threshold']:.3f}; "
          f"each cross-validated film is judged at its fold's own: "
          + ", ".join(f"{t:.3f}" for t in measured["fold_thresholds"]) + "\n")
    print_scope_table([*cross_validated_rows(sets, chest, measured), *served_rows(loaded, args.data, args.seed)])
    print_adult_model(population.adult_model_figures(loaded, sets.adults))

if __name__ == "__main__":
    main()
