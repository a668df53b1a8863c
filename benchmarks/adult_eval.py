"""Adults and children side by side: the adult answer on radiologists' labels, the
children's figures, and who gets a verdict at all.

    python benchmarks/adult_eval.py [--model RUN_FOLDER] [--data ../shared/data/chest_xray]
                                    [--adult-data ../shared/data/adult_cxr] [--seed 0]

- Adults: the adult answer (pneumo/answers/adult.py) cross-validated by patient on the
  films RSNA radiologists read (training/adults/answer.py: every film scored by a
  read-out, calibration and threshold fitted without its patient); for a
  joint run (adult_held_out.json), its own read-out on the patients it held
  out, calibration and threshold cross-fitted on them: ROC AUC
  and sensitivity/specificity for `Lung Opacity` against `Normal`, ROC AUC
  against every film read without opacity, ECE, and the share of adult films
  that the population check routes to the adult answer. The children's model's
  own P(pneumonia) on the same films is the baseline. The same figures within
  each projection (AP, PA), and the projection alone as a ranking: bedside AP
  films are mostly the sicker patients', so an AUC over both projections partly
  measures the projection. Then the shipping rule.
- Children: val/ through pneumo.analysis with the run folder's own files.
- Scope: benchmarks/scope_eval.py's table from the same scoring pass.

One scoring pass of every set with its variants: about 45 minutes on 2 cores.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scope_eval import (cross_validated_rows, parse_args, print_scope_table,  # noqa: E402
                        score_and_cross_validate, served_rows)

from pneumo.analysis import analyse_many  # noqa: E402
from pneumo.answers.classes import CLASSES  # noqa: E402
from pneumo.model.run_folder import ADULT_HELD_OUT  # noqa: E402
from pneumo.checks.scope import CHILD, OK  # noqa: E402
from training.adults import answer as adult  # noqa: E402
from training.checks import population  # noqa: E402
from training.children.data import labels_of  # noqa: E402
from training.report.metrics import evaluate  # noqa: E402


def adult_rows(measured, routed, how):
    figures = adult.figures(measured)
    films = figures["films"]
    print(f"\nAdults: {films['lung_opacity']} Lung Opacity, {films['normal']} Normal, {films['other_read']} read "
          f"without opacity (RSNA radiologists), {how}\n")
    print("| read-out | ROC AUC (opacity vs normal) | sensitivity | specificity | ROC AUC (vs all read) | ECE |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| the children's model's P(pneumonia), unchanged | {figures['child_model_roc_auc']:.3f} | - | - | - | - |")
    print(f"| the adult answer | {figures['roc_auc']:.3f} | {figures['sensitivity']:.3f} | "
          f"{figures['specificity']:.3f} | {figures['roc_auc_all_read']:.3f} | {figures['ece']:.3f} |")
    for view, within in figures.get("by_projection", {}).items():
        films = within["films"]
        print(f"| the adult answer, {view} films only ({films['lung_opacity']} opacity, {films['normal']} normal, "
              f"{films['other_read']} other) | {_figure(within['roc_auc'])} | {_figure(within['sensitivity'])} | "
              f"{_figure(within['specificity'])} | {_figure(within['roc_auc_all_read'])} | - |")
    if "projection_alone_roc_auc" in figures:
        print(f"| the projection alone (AP above PA) | {figures['projection_alone_roc_auc']:.3f} | - | - | - | - |")
    print(f"\nAdult films the population check routes to the adult answer (cross-validated): {routed:.1%}")
    verdicts = adult.rule_verdicts(figures)
    print("Shipping rule: " + "; ".join(f"{key} >= {bar}: {'met' if verdicts[key] else 'MISSED'} "
                                        f"({figures[key]:.3f})" for key, bar in adult.RULE.items()))
    print("The adult answer " + ("meets the rule." if all(verdicts.values()) else
                                 "misses the rule: adults stay outside the population."))


def _figure(value):
    return "-" if value is None else f"{value:.3f}"


def child_rows(loaded, splits):
    images = [sample.path for sample in splits.selection]
    analyses = analyse_many(images, loaded)
    probabilities = np.array([[(a.probabilities or a.research["probabilities"])[name] for name in CLASSES]
                              for a in analyses])
    figures = evaluate(labels_of(splits.selection), probabilities, loaded.config["threshold"])
    answered = np.mean([a.scope == OK and a.population == CHILD for a in analyses])
    print(f"\nChildren: {splits.selection_name}/ ({len(images)} films), the children's model as served "
          f"({loaded.identity['runtime']})\n")
    print("| accuracy | ROC AUC | sensitivity | specificity | bacterial-vs-viral AUC | ECE | child verdicts |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {figures['accuracy']:.4f} | {figures['roc_auc']:.4f} | {figures['sensitivity']:.3f} | "
          f"{figures['specificity']:.3f} | {figures['bacterial_viral_auc']:.4f} | {figures['ece']:.3f} | "
          f"{answered:.1%} |")


def main():
    args = parse_args(__doc__)
    loaded, splits, sets, measured = score_and_cross_validate(args)
    adult_scores = measured["scores"]["original"][1]
    reaches = population.reaches_check(sets.adults.variants["original"], loaded.ood_check)
    routed = float(np.mean(reaches & (adult_scores >= measured["thresholds"][1])))  # each at its fold's own cut
    labels = adult.read_labels(args.adult_data)
    joint = Path(args.model) / ADULT_HELD_OUT
    if joint.is_file():  # a joint run: its own read-out, on the patients that chose its epoch
        _, judged = adult.selection_judgement(sets.adults, labels, json.loads(joint.read_text()), args.seed)
        how = f"the {judged['patients']} read patients that chose the joint run's epoch"
    else:
        judged, how = adult.cross_validate(sets.adults, labels, args.seed), f"{adult.FOLDS} folds by patient"
    adult_rows(judged, routed, how)
    child_rows(loaded, splits)
    print(f"\nScope (population check threshold from cross-validation: {measured['threshold']:.3f})\n")
    print_scope_table([*cross_validated_rows(sets, loaded.ood_check, measured),
                       *served_rows(loaded, args.data, args.seed)])


if __name__ == "__main__":
    main()
