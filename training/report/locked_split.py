"""Score a shipping candidate once on the locked adult split, and judge the shipping rule there.

    python -m training.report.locked_split RUN_FOLDER --adult-data ../shared/data/adult_cxr \
        [--jsrt ../shared/data/lung_masks]

The adult answer's own figures (adult.json `cross_validated`) come from the
films every choice was tuned on. This step scores the run's adult answer, as
fitted, on the patients that no fit saw (training/adults/locked.py):

- opacity against normal: ROC AUC, and sensitivity and specificity at the
  served threshold; AUC and specificity against every film read without
  opacity ("not normal, no opacity" among the negatives);
- the served path end to end: the share of locked adult films that get the
  adult answer at all (routing and checks included);
- JSRT films (Japan, no pneumonia; `--jsrt`): the share called PNEUMONIA,
  false alarms at another hospital, on the half of them that no fit saw
  (training/checks/scope.py `jsrt_halves`; the adult answer learns the other
  half as films without pneumonia);

on int8 and on float (RUNTIMES): the rule must hold on both.

It writes them to adult.json (`locked`), sets adult.npz `shipped` to whether
LOCKED_RULE holds (the tuning rule, on the cross-validated figures, only
says whether a fit is worth scoring here), and rewrites the card. Each scoring
of the project's own lock is appended to locked_ledger.jsonl beside the lock,
so that a candidate tuned against the locked split would show in git history.
"""

import argparse
import datetime
from dataclasses import replace
import json
import os
from pathlib import Path

import numpy as np

from pneumo.analysis import analyse_many
from pneumo.answers.adult import AdultHead
from pneumo.checks.scope import ADULT as ADULT_POPULATION
from pneumo.model.loading import load_model, sha256_of
from pneumo.model.run_folder import ADULT, ADULT_REPORT

from training.adults import answer
from training.adults.locked import LOCK_FILE, readings_digest, locked_patients
from training.checks.scope import ADULT_DIR_ENV, jsrt_halves, score_set
from training.children.data import open_grey
from training.report.card import rewrite_card

# The rule on the locked split (a candidate ships only if all hold, and the tuning rule too).
LOCKED_RULE = {"roc_auc": 0.90, "sensitivity": 0.85, "specificity": 0.75, "roc_auc_all_read": 0.82}
JSRT_PNEUMONIA_AT_MOST = 0.10
LEDGER = LOCK_FILE.with_name("locked_ledger.jsonl")
# int8 serves on CPUs with VNNI (Spaces), float elsewhere: the rule must hold on both.
RUNTIMES = ("onnx-int8", "onnx-float")


def locked_films(adult_dir) -> list[tuple[Path, dict]]:
    """The radiologist-read films of the locked patients, with their labels.csv rows."""
    locked = locked_patients(adult_dir)
    return [(Path(adult_dir) / name, row) for name, row in sorted(answer.read_labels(adult_dir).items())
            if row["patient"] in locked and row.get("rsna_class") and (Path(adult_dir) / name).is_file()]


def head_probabilities(loaded, head, films, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """The head's calibrated P(pneumonia) of each film on the features it was fitted on (as the fits score
    them: training/checks/scope.py), and the children's model's P(pneumonia) of it."""
    scored = score_set(loaded, [open_grey(path) for path, _ in films], 1, [row["patient"] for _, row in films],
                       np.zeros(len(films), int), (), seed)
    features = scored.variants["original"]
    kind = "adult_trunk" if head.trunk else ("adult_lungs" if head.lungs else "adult")
    raw = features.raw
    return head.probability(getattr(features, kind)), raw[:, 1] + raw[:, 2]


def served_shares(loaded, paths) -> dict:
    """Through pneumo.analysis, as users get them: the share of films answered as adults, and called PNEUMONIA."""
    results = analyse_many(paths, loaded)
    return {"films": len(results),
            "adult_answer": float(np.mean([r.population == ADULT_POPULATION and r.label is not None
                                           for r in results])),
            "any_verdict": float(np.mean([r.label is not None for r in results])),
            "called_pneumonia": float(np.mean([r.label == "PNEUMONIA" for r in results]))}


def jsrt_films(jsrt_dir, log=print) -> list[Path]:
    """The JSRT films that measure false alarms: the half that no fit saw."""
    films = jsrt_halves(jsrt_dir)[1] if jsrt_dir else []
    if not films:
        log(f"no JSRT films at {jsrt_dir}: the share of them called PNEUMONIA is left out")
    return films


def score_locked(run_folder, adult_dir, jsrt_dir=None, seed=0, runtimes=RUNTIMES, log=print) -> dict:
    """The locked figures of the run's adult answer, the served shares and the rule's verdicts, on each of
    `runtimes` the folder can serve (the first one's are the figures; the rule must hold on every one).
    The answer is scored as if it shipped, whatever adult.npz says now: it is the candidate."""
    head = AdultHead.load(run_folder)
    if head is None:
        raise SystemExit(f"{run_folder} has no adult answer ({ADULT}) to score")
    films = locked_films(adult_dir)
    if not films:
        raise SystemExit(f"no radiologist-read film of a locked patient in {adult_dir}")
    jsrt = jsrt_films(jsrt_dir, log)
    by_runtime = {}
    for runtime in runtimes:
        try:
            loaded = load_model(run_folder, runtime=runtime)
        except RuntimeError as error:  # e.g. no model.int8.onnx (int8 cost too much accuracy): not served, not scored
            log(f"locked split: {runtime} not scored ({error})")
            continue
        by_runtime[runtime] = score_on(loaded, head, films, jsrt, seed)
    if not by_runtime:
        raise SystemExit(f"no runtime of {runtimes} can serve {run_folder}")
    first = next(iter(by_runtime.values()))
    verdicts = {key: all(scored["rule_met"][key] for scored in by_runtime.values()) for key in first["rule_met"]}
    return {"figures": first["figures"], "runtime": next(iter(by_runtime)),
            "by_runtime": {name: _headline(scored["figures"]) for name, scored in by_runtime.items()},
            "rule": LOCKED_RULE | {"jsrt_called_pneumonia_at_most": JSRT_PNEUMONIA_AT_MOST},
            "rule_met": verdicts, "head_sha256": sha256_of(Path(run_folder) / ADULT),
            "scored": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def score_on(loaded, head, films, jsrt, seed) -> dict:
    """The figures and verdicts of `head` on the locked `films` (and the `jsrt` films) through `loaded`."""
    loaded.__dict__["adult_head"] = replace(head, shipped=1.0)  # the cached property, set: the candidate serves
    probability, child_model = head_probabilities(loaded, head, films, seed)
    measured = answer.figures({"reading": np.array([row["rsna_class"] for _, row in films]),
                               "probability": probability, "predicted": probability >= head.threshold,
                               "child_model": child_model,
                               "projection": np.array([row.get("view", "") for _, row in films])})
    measured["patients"] = len({row["patient"] for _, row in films})
    measured["served"] = served_shares(loaded, [path for path, _ in films])
    verdicts = {key: measured[key] >= bar for key, bar in LOCKED_RULE.items()}
    if jsrt:
        measured["jsrt"] = served_shares(loaded, jsrt)
        verdicts["jsrt_called_pneumonia"] = measured["jsrt"]["called_pneumonia"] <= JSRT_PNEUMONIA_AT_MOST
    return {"figures": measured, "rule_met": verdicts}


def judge_and_save(run_folder, adult_dir, jsrt_dir=None, seed=0, log=print) -> dict:
    """Score once, write adult.json's `locked`, set `shipped`, log it in the ledger for the project's own lock."""
    run = Path(run_folder)
    report = json.loads((run / ADULT_REPORT).read_text())
    locked = score_locked(run, adult_dir, jsrt_dir, seed, log=log)
    head = AdultHead.load(run)
    head.shipped = float(all(locked["rule_met"].values()))  # the tuning rule only chose the candidate
    head.save(run / ADULT)  # the verdict is part of the head; its digest above is the head as fitted
    report["locked"] = locked
    report["shipped"] = bool(head.shipped)
    (run / ADULT_REPORT).write_text(json.dumps(report, indent=2))
    if LOCK_FILE.is_file() and json.loads(LOCK_FILE.read_text())["readings_sha256"] == readings_digest(adult_dir):
        with open(LEDGER, "a") as f:
            f.write(json.dumps({"scored": locked["scored"], "run": str(run), "head_sha256": locked["head_sha256"],
                                "by_runtime": locked["by_runtime"], "rule_met": locked["rule_met"],
                                "shipped": report["shipped"]}) + "\n")
    log(f"locked split: {json.dumps(locked['by_runtime'])}; rule {locked['rule_met']}; "
        f"{'ships' if head.shipped else 'does not ship'}")
    rewrite_card(run)
    return report


def _headline(figures) -> dict:
    keys = ("films", "patients", "roc_auc", "sensitivity", "specificity", "specificity_all_read", "roc_auc_all_read")
    out = {key: figures[key] for key in keys}
    out["served_adult_answer"] = figures["served"]["adult_answer"]
    if "jsrt" in figures:
        out["jsrt_called_pneumonia"] = figures["jsrt"]["called_pneumonia"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.report.locked_split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="the run folder whose adult answer is the candidate")
    p.add_argument("--adult-data", default=os.environ.get(ADULT_DIR_ENV),
                   help=f"the adult folder whose locked patients score it [{ADULT_DIR_ENV}]")
    p.add_argument("--jsrt", default=os.environ.get("PNEUMO_JSRT_DIR"),
                   help="the lung_masks folder (images/*.png: JSRT films, no pneumonia); without it that figure "
                        "and its rule are left out [PNEUMO_JSRT_DIR]")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.adult_data:
        p.error(f"--adult-data (or {ADULT_DIR_ENV}) is needed")
    judge_and_save(args.run_folder, args.adult_data, args.jsrt, args.seed)


if __name__ == "__main__":
    main()
