"""Films that come turned or with inverted grey levels: what the app answers.

    python benchmarks/orientation_eval.py [--model RUN_FOLDER] [--data ../shared/data/chest_xray]
                                          [--adult-data ../shared/data/adult_cxr]

Every val/ film in all 8 ways (4 turns x 2 polarities: pneumo/inputs/orientation.py)
goes through pneumo.analysis, once with the run folder's orientation check
and once without it. Per way: how many films were turned back, how many got
a verdict, and how many verdicts were wrong (label unlike the truth), as a
share of all films of that way. Then the adult films, upright as stored:
how many the check turns (a false correction, unless the film was stored
turned), over all of them and over the patients the fit held out
(training/checks/orientation.py). Targets: no more than 1% wrong verdicts on
altered films; the upright films' accuracy, ROC AUC and share with a
verdict unchanged.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pneumo.analysis import analyse_many  # noqa: E402
from pneumo.inputs.decode import decode  # noqa: E402
from pneumo.model.loading import BUNDLED_DIR, load_model  # noqa: E402
from pneumo.inputs.orientation import UPRIGHT, WAYS, altered  # noqa: E402
from training.checks.orientation import adults  # noqa: E402

CHUNK = 16


def way_name(way):
    turn, inverted = WAYS[way]
    return (f"turned {turn}°" if turn else "upright") + (", inverted" if inverted else "")


def analyse_ways(loaded, paths):
    """{way: [Analysis per film]} for every way of WAYS; each film decoded once."""
    out = {way: [] for way in range(len(WAYS))}
    for start in range(0, len(paths), CHUNK):
        images = [decode(p).image for p in paths[start:start + CHUNK]]
        for way in out:
            out[way] += analyse_many([altered(image, way) for image in images], loaded)
    return out


def row(analyses, truth):
    verdict = np.array([a.label is not None for a in analyses])
    said = np.array([a.label == "PNEUMONIA" for a in analyses])
    turned = np.array([any("before analysis" in w for w in a.warnings) for a in analyses])
    wrong = verdict & (said != truth)
    correct = verdict & (said == truth)
    p = np.array([a.pneumonia_probability if a.label else np.nan for a in analyses])
    auc = roc_auc_score(truth[verdict], p[verdict]) if len(set(truth[verdict])) == 2 else float("nan")
    return (f"{turned.mean():.1%} | {verdict.mean():.1%} | {correct.sum() / max(verdict.sum(), 1):.3f} | "
            f"{auc:.4f} | {wrong.mean():.1%} ({wrong.sum()})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_DIR))
    p.add_argument("--data", default="../shared/data/chest_xray")
    p.add_argument("--adult-data", default="../shared/data/adult_cxr")
    args = p.parse_args()
    loaded = load_model(path=args.model)
    if loaded.orientation_check is None:
        sys.exit(f"{args.model} has no orientation check (python -m training.checks.orientation RUN_FOLDER)")
    without = dataclasses.replace(loaded)
    without.__dict__["orientation_check"] = None  # the same model, films taken as they come
    paths = sorted(Path(args.data, "val").glob("*/*.jpeg"))
    truth = np.array([path.parent.name == "PNEUMONIA" for path in paths])
    print(f"model {loaded.identity['name']} on {loaded.identity['runtime']}; check threshold "
          f"{loaded.orientation_check.threshold:.3f}; {len(paths)} val/ films in each way\n")
    print("| val/ films | check | turned back | verdict | accuracy of verdicts | ROC AUC | wrong verdicts |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    results = {name: analyse_ways(model, paths) for name, model in (("on", loaded), ("off", without))}
    for way in range(len(WAYS)):
        for name in ("off", "on"):
            print(f"| {way_name(way)} | {name} | {row(results[name][way], truth)} |")
    altered_on = [a for way in range(1, len(WAYS)) for a in results["on"][way]]
    altered_truth = np.tile(truth, len(WAYS) - 1)
    print(f"| all 7 altered ways | on | {row(altered_on, altered_truth)} |")

    check = loaded.orientation_check
    everyone = sorted(Path(args.adult_data).glob("*.jpeg"))
    held = {path.name for path in adults(args.adult_data, 0)[1]}
    turned = [path.name for path in everyone if check.way_of(decode(path).image) != UPRIGHT]
    turned_held = [name for name in turned if name in held]
    print(f"\nadult films as stored: {len(turned)} of {len(everyone)} turned ({len(turned) / len(everyone):.2%}); "
          f"of the {len(held)} held out of the fit: {len(turned_held)} ({len(turned_held) / len(held):.2%}): "
          + ", ".join(turned))


if __name__ == "__main__":
    main()
