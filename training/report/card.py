"""The run folder's README.md: a Hub model card built with `ModelCard`."""

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from pneumo.model.run_folder import (ADULT_REPORT, ANATOMY_REPORT, CARD, METRICS, ONNX_REPORT, POPULATION_REPORT,
                                     read_config)

DATASET = "Kermany, Zhang and Goldbaum (2018), chest X-ray images, Mendeley Data, doi:10.17632/rscbjbr9sj.2"
CARD_METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity")

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

Classifies a frontal chest X-ray as NORMAL, BACTERIAL pneumonia or VIRAL
pneumonia; P(pneumonia) = P(bacterial) + P(viral). Made for the Pneumonia
Detector Space: research and teaching only, **not a medical device** and not
a diagnosis.

## Results

Threshold for PNEUMONIA: **{{ threshold }}**, {{ threshold_rule }}

| split | images | accuracy | ROC AUC | sensitivity | specificity | precision | F1 | bacterial-vs-viral AUC | ECE |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{{ results_table }}

{{ runtimes }}

`val` is half of the official test split (a later collection than
`train/`); `train_holdout` is a patient-level split of `train/`. The two
differ on purpose: scores on a split of `train/` overstate how the model does
on new collections. Plots: `roc.png`, `training.png`, `reliability.png`.
Probabilities are calibrated on the selection split (temperature T = {{ temperature }}
and per-class biases {{ class_bias }}: softmax(log p / T + b)); ECE is measured after calibration.

## Who it is for

{{ who_it_is_for }}

## Model

{{ model_description }}

Preprocessing (the `pneumo` package does it for you): {{ preprocessing }}

Reproduce: `{{ command }}`

{{ anatomy }}

## Intended use and limits

- Research, teaching and demos of medical image classification.
- Trained on pediatric chest X-rays (anterior-posterior) of children aged one
  to five from one center, Guangzhou Women and Children's Medical Center.
  Adults, other views, other hospitals and other devices are outside what it
  has seen; expect worse and unmeasured performance there.
- It knows three classes only: it cannot see other findings (effusion,
  tuberculosis, COVID-19, devices) and may call them anything.
- Not a medical device, not cleared for clinical use, not a diagnosis.

## Data and attribution

{{ dataset }}, licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
Kermany et al., "Identifying Medical Diagnoses and Treatable Diseases by
Image-Based Deep Learning", Cell 172(5), 2018.
{{ anatomy_credits }}
"""


def results_row(name, m):
    bv = "—" if m["bacterial_viral_auc"] is None else f"{m['bacterial_viral_auc']:.3f}"
    cells = [name, m["images"], f"{m['accuracy']:.3f}", f"{m['roc_auc']:.4f}", f"{m['sensitivity']:.3f}",
             f"{m['specificity']:.3f}", f"{m['precision']:.3f}", f"{m['f1']:.3f}", bv, f"{m['ece']:.3f}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def who_it_is_for(scope, adult_report=None) -> str:
    """The scope checks' section, with the figures measured when they were fitted (training/checks/scope.py)."""
    checks = ("The `pneumo` package answers only for images in the model's scope. Uploads that do not look "
              "like a chest X-ray (colour, blank or noisy images, or model features far from the training "
              "X-rays', fitted in `ood.npz`) get the scope `not_chest_xray` and no verdict; phone photos of a "
              "film are cropped to the film and read in greyscale.")
    if not scope:
        return checks + (" This run has no population check (`population.npz`): it cannot tell an adult's film "
                         "from a young child's, so no chest X-ray gets a verdict from it.")
    adult, cv = scope["adult_model"], scope["cross_validated"]
    tried = ""
    read = (adult_report or {}).get("cross_validated", {})
    if isinstance(read.get("child_model_roc_auc"), (int, float)):  # on radiologists' readings: the figure to give
        tried = (f" On {read['films']['lung_opacity']} adult films that radiologists read as lung opacity and "
                 f"{read['films']['normal']} read as normal (NIH Clinical Center), this model's P(pneumonia) ranks "
                 f"them at ROC AUC {read['child_model_roc_auc']:.3f}; it was never validated on adults.")
    elif adult["sensitivity"] == adult["sensitivity"]:  # measured (not NaN): NIH labels mined from report text
        tried = (f" Tried on {adult['adult_films']} adult films ({adult['adult_pneumonia']} with pneumonia by NIH "
                 f"labels mined from report text, not read by radiologists), the model at its threshold had "
                 f"sensitivity {adult['sensitivity']:.2f}, specificity {adult['specificity']:.2f} and ROC AUC "
                 f"{adult['roc_auc']:.2f}.")
    at = (f"each film at a threshold chosen without its own fold (the served one: P(outside) >= {scope['threshold']:.3f})"
          if "cross_validated_at" in scope else  # older reports: at the threshold these very scores chose
          f"at P(outside) >= {scope['threshold']:.3f}, the threshold these scores chose")
    routed = ("sends adult films to the adult answer below (`population` \"adult\") instead of this model"
              if adult_report and adult_report.get("shipped") else
              "gives adult films the scope `outside_population` and no verdict")
    return checks + f"""

Children aged 1-5 of one hospital only.{tried} So a population check (`population.npz`: a logistic regression on the
model's region features, children against adult films, fitted with the same re-framings and phone photos
on both sides) {routed}. Cross-validated by patient
(no image scored by a check fitted on it), {at}:

| films | children routed as adults | adults routed as adults |
| --- | --- | --- |
""" + "\n".join(f"| {VARIANT_NAMES.get(name, name)} | {g['children']:.1%} | {g['adults']:.1%} |"
                 for name, g in cv.items()) + _sources(scope) + adult_answer(adult_report)


def _sources(scope) -> str:
    """The adult hospitals the population check learnt from, and each one's figure when left out."""
    left_out = scope.get("one_source_left_out")
    if not left_out:
        return ""
    counts = ", ".join(f"{count} from {name}" for name, count in scope["adult_sources"].items())
    rows = "\n".join(f"| {name} | {m['films']} | {m['routed_as_adults']['original']:.1%} | "
                     f"{m['routed_as_adults'].get('photo', float('nan')):.1%} |" for name, m in left_out.items())
    return f"""

Its adult films came from more than one hospital ({counts}). Each hospital left out in turn, a check fitted on
the children and the other hospital's adults alone (thresholded the same way) routes that hospital's films:

| hospital left out | films | routed as adults | their phone photos |
| --- | --- | --- | --- |
{rows}
"""


# The shipping rule's figures (training/adults/answer.py), as the card names them.
RULE_NAMES = {"roc_auc": "ROC AUC", "roc_auc_all_read": "ROC AUC against all read films",
              "jsrt_called_pneumonia": "JSRT films called PNEUMONIA"}


def adult_answer(report) -> str:
    """The adult answer's paragraph (training/adults/answer.py), with its cross-validated figures."""
    if not report:
        return ""
    cv, films = report["cross_validated"], report["cross_validated"]["films"]
    outcome = ("It met every bar, so adult films get it: pneumonia or not, with no bacterial/viral split."
               if report["shipped"] else
               "It missed " + ", ".join(_missed(report)) + ", so it is not served: adult films keep the scope "
               "`outside_population`.")
    joint = "joint run" in report.get("measured_on", "")
    if joint:
        what = ("this model's own adult output (trained jointly on children and adults; a logistic read-out of its "
                "last-layer maps)")
    elif "adult trunk" in report.get("features", ""):
        what = (f"a logistic regression on the {report['features']}, trained on adult films that radiologists "
                "read; the trunk is a second, frozen network for adult films only, `adult_trunk.int8.onnx`")
    else:
        lungs = report.get("features", "").endswith("lung fields")
        pooled = "last-layer maps over each film's lung fields" if lungs else "features"
        what = f"a logistic regression on this model's {pooled}, trained on adult films that radiologists read"
    how = (f"patients the training never saw ({report['measured_on']}; calibration and threshold cross-fitted "
           "on them)" if joint else "five folds by patient, on the films every choice was tuned on")
    return f"""

**Adults.** An answer for adults (`adult.npz`: {what}) was measured on {films['lung_opacity']} films read as
lung opacity, {films['normal']} read as normal and {films['other_read']} read as neither (RSNA radiologists;
one hospital, the NIH Clinical Center), {how}: ROC AUC {cv['roc_auc']:.3f} for opacity against normal
(the children's model alone: {cv['child_model_roc_auc']:.3f}), sensitivity {cv['sensitivity']:.3f} and
specificity {cv['specificity']:.3f} at its threshold, ROC AUC {cv['roc_auc_all_read']:.3f} against every film
read without opacity, ECE {cv['ece']:.3f}.{_locked(report)} {_rule_sentence(report)} {outcome}\
{_by_projection(cv)}{_feature_check(report)}{_opacity_map(report)}"""


def _rule_sentence(report) -> str:
    """The shipping rule: on the locked split once it scored the answer, else the tuning bars."""
    locked = report.get("locked")
    rule = locked["rule"] if locked else report["rule"]
    where = " on the locked split" if locked else ""
    jsrt = (f", and at most {rule['jsrt_called_pneumonia_at_most']:.0%} of JSRT films are called PNEUMONIA"
            if locked and "jsrt_called_pneumonia" in locked["rule_met"] else "")
    return (f"It ships only if{where} ROC AUC >= {rule['roc_auc']}, sensitivity >= {rule['sensitivity']} with "
            f"specificity >= {rule['specificity']}, and ROC AUC against all read films >= {rule['roc_auc_all_read']}"
            f"{jsrt}.")


def _missed(report) -> list[str]:
    """The bars that decided: the locked split's when it scored the answer, else the tuning ones."""
    locked = report.get("locked")
    if not locked:
        return [f"{RULE_NAMES.get(key, key)} >= {bar}" for key, bar in report["rule"].items()
                if not report["rule_met"][key]]
    bars = {**locked["rule"], "jsrt_called_pneumonia": locked["rule"]["jsrt_called_pneumonia_at_most"]}
    return [f"{RULE_NAMES.get(key, key)} {'<=' if key.startswith('jsrt') else '>='} {bars[key]} on the locked split"
            for key, met in locked["rule_met"].items() if not met]


def _locked(report) -> str:
    """The tuning figures beside the locked split's (training/report/locked_split.py), when it was scored."""
    locked = report.get("locked")
    if not locked:
        return (" These are tuning figures: no locked split has scored this answer yet "
                "(`python -m training.report.locked_split`).")
    cv, fl = report["cross_validated"], locked["figures"]
    rows = [("ROC AUC, opacity against normal", "roc_auc"), ("sensitivity at the threshold", "sensitivity"),
            ("specificity against normal", "specificity"),
            ("specificity against every film read without opacity", "specificity_all_read"),
            ("ROC AUC against every film read without opacity", "roc_auc_all_read")]
    table = "\n".join(f"| {name} | {cv[key]:.3f} | {fl[key]:.3f} |" for name, key in rows)
    jsrt = fl.get("jsrt")
    jsrt_row = (f"\n| JSRT films (Japan, no pneumonia) called PNEUMONIA | | {jsrt['called_pneumonia']:.1%} of "
                f"{jsrt['films']} |" if jsrt else "")
    films = fl["films"]
    others = "".join(f" On `{name}`: ROC AUC {m['roc_auc']:.3f}, sensitivity {m['sensitivity']:.3f}, specificity "
                     f"{m['specificity']:.3f}, against every film read without opacity {m['roc_auc_all_read']:.3f}"
                     + (f", JSRT called PNEUMONIA {m['jsrt_called_pneumonia']:.1%}" if "jsrt_called_pneumonia" in m
                        else "") + "."
                     for name, m in locked.get("by_runtime", {}).items() if name != locked.get("runtime"))
    return f"""

Side by side with a locked split: {fl['patients']} radiologist-read patients ({films['lung_opacity']} films read
as opacity, {films['normal']} as normal, {films['other_read']} as neither) that no fit, calibration or choice
touched, scored once ({locked['scored'][:10]}); {fl['served']['adult_answer']:.1%} of their films got the adult
answer through the served path (routing and checks included).

| figure | tuning (five folds) | locked split{f" (`{locked['runtime']}`)" if locked.get('runtime') else ""} |
| --- | --- | --- |
{table}{jsrt_row}
{others}
"""


def _opacity_map(report) -> str:
    """One sentence on adult_opacity.npz (training/adults/opacity.py), when the run has one."""
    fitted = report.get("opacity_map")
    if not fitted:
        return ""
    return (f"\nAn adult film's heatmap is an opacity map (`adult_opacity.npz`): a linear score of each cell of "
            f"the trunk's maps and its neighbourhood, trained on the lung cells of {fitted['films']} films that "
            f"radiologists read or boxed ({fitted['boxed_films']} with boxes around opacities, each also mirrored) "
            "so that a boxed film's cells inside a box score highest, and read as the chance that the cell lies "
            "inside a box. It says where, never whether.")


def _feature_check(report) -> str:
    """One sentence on adult_check.npz (training/adults/answer.py), when the run has one."""
    check = report.get("feature_check")
    if not check:
        return ""
    away = check["turned_away"]
    shares = ", ".join(f"{share:.1%} of {VARIANT_NAMES.get(name, name)}" for name, share in away.items())
    return ("\nA film read as an adult's gets `outside_population` instead when no lung fields of its own are "
            "found on it, or when a feature check on the same features (`adult_check.npz`, fitted on the adult "
            "films) finds it far from every adult film (a scanned page or a photo that the children's checks let "
            f"through); by folds by patient that check turned away {shares}.")


def _by_projection(cv) -> str:
    """One sentence on the projection: bedside (AP) films are mostly the sicker patients'."""
    within = cv.get("by_projection")
    if not within:
        return ""
    parts = [f"{view} films {figures['roc_auc']:.3f}" for view, figures in within.items()
             if figures["roc_auc"] is not None]
    return (f"\nWithin one projection the ROC AUC for opacity against normal is {' and '.join(parts)}; the "
            f"projection alone (bedside AP above PA) ranks them at {cv['projection_alone_roc_auc']:.3f}, so part "
            "of the figure over both is the projection, not the lungs.")


# The ONNX runtimes of onnx.json (training/deploy/quantize.py), as pneumo/model/runtime.py names them.
RUNTIME_NAMES = {"int8": "onnx-int8", "float": "onnx-float"}


def runtimes_section(onnx) -> str:
    """What the runtimes that serve the model score, beside Keras's figures above."""
    if not onnx:
        return "`pneumo` serves this run with Keras (it has no ONNX models)."
    rows = [f"| {RUNTIME_NAMES[kind]} | {r['runtime']['accuracy']:.3f} | {r['runtime']['roc_auc']:.4f} | "
            f"{r['runtime']['sensitivity']:.3f} | {r['runtime']['specificity']:.3f} | {r['label_agreement']:.1%} |"
            for kind, r in onnx.items() if kind in RUNTIME_NAMES and r.get("written", True)]
    return (f"`pneumo` serves it with ONNX Runtime: `onnx-int8` on CPUs with VNNI, else `onnx-float`. On "
            f"`{onnx['split']}` at the same threshold:\n\n| runtime | accuracy | ROC AUC | sensitivity | specificity "
            "| same label as Keras |\n| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows))


# The variants of training/checks/variants.py, as the card names them.
VARIANT_NAMES = {"original": "the files as they are", "site": "re-framed, re-sized, re-compressed, other exposure",
                 "photo": "phone photos of the films", "unseen": "re-rendered in ways no fit saw (equalised, "
                 "collimated, cropped): a proxy for other hospitals"}


def anatomy_section(report) -> str:
    """The lungs and heart (anatomy.onnx, training/anatomy/segmenter.py), when the run folder has its report."""
    if not report:
        return ""
    dice = report["dice"]
    return (f"**Lungs and heart.** `anatomy.onnx` outlines the right lung, the left lung and the heart: a U-Net of "
            f"{report['parameters']:,} parameters at {report['input_size']} px, trained on "
            f"{report['training_films']} JSRT films with the SCR outlines; on the {len(report['held_out'])} films it "
            f"held out, Dice right lung {dice['right']:.3f}, left lung {dice['left']:.3f}, heart {dice['heart']:.3f}. "
            "The outlines are the visible lung (not behind the heart nor below the diaphragm's dome), in the "
            "uploaded image; the checks of a chest X-ray and of a mirrored film stand on them.")


def anatomy_credits(report) -> str:
    if not report:
        return ""
    return ("\nThe lungs and heart learnt from the JSRT database (Shiraishi et al., AJR 2000;174:71-74; free for "
            "research and education) with the SCR masks (van Ginneken, Stegmann and Loog, Medical Image Analysis "
            "2006;10(1):19-40).")


def rewrite_card(run):
    """The model card, from the run folder's own files: after a refit of its scope checks, its adult
    answer, its opacity map or its threshold (a folder without metrics.json keeps its card)."""
    run = Path(run)

    def read(name):
        return json.loads((run / name).read_text()) if (run / name).is_file() else None

    if (run / METRICS).is_file():
        build_card(read_config(run), read(METRICS), read(POPULATION_REPORT), read(ONNX_REPORT),
                   read(ADULT_REPORT), read(ANATOMY_REPORT)).save(run / CARD)


def build_card(config, metrics, scope=None, onnx=None, adult=None, anatomy=None):
    evaluated = {name: m for name, m in metrics["splits"].items()}
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type="chest-xray-pneumonia",
            dataset_name="Chest X-Ray Images (Pneumonia), Kermany et al. 2018",
            dataset_split=name,
            metric_type=metric,
            metric_value=round(m[metric], 4),
        )
        for name, m in evaluated.items()
        for metric in CARD_METRICS
        if m.get(metric) is not None
    ]
    data = ModelCardData(
        model_name=config["name"],
        library_name="keras",
        license="cc-by-4.0",
        pipeline_tag="image-classification",
        tags=["medical-imaging", "chest-x-ray", "pneumonia", config["architecture"], "grad-cam"],
        metrics=list(CARD_METRICS),
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        model_name=config["name"],
        threshold=f"{config['threshold']:.3f}",
        threshold_rule=config["threshold_rule"],
        temperature=f"{config['temperature']:.3f}",
        class_bias=", ".join(f"{b:+.2f}" for b in config["class_bias"]),
        results_table="\n".join(results_row(n, m) for n, m in evaluated.items()),
        model_description=config["description"],
        preprocessing=config["preprocessing"],
        command=config["command"],
        dataset=DATASET,
        who_it_is_for=who_it_is_for(scope, adult),
        runtimes=runtimes_section(onnx),
        anatomy=anatomy_section(anatomy),
        anatomy_credits=anatomy_credits(anatomy),
    )
