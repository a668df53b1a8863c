"""The run folder's README.md: a Hub model card built with `ModelCard`."""

from huggingface_hub import EvalResult, ModelCard, ModelCardData

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

`val` is half of the official test split (a later collection than
`train/`); `train_holdout` is a patient-level split of `train/`. The two
differ on purpose: scores on a split of `train/` overstate how the model does
on new collections. Plots: `roc.png`, `training.png`, `reliability.png`.
Probabilities are calibrated on the selection split (temperature T = {{ temperature }}
and per-class biases {{ class_bias }}: softmax(log p / T + b)); ECE is measured after calibration.
Uploads that do not look like a chest X-ray (colour, blank or noisy images, or
model features far from the training X-rays', fitted in `ood.npz`) are flagged
`not_chest_xray` by the `pneumo` package instead of being trusted.

## Model

{{ model_description }}

Preprocessing (the `pneumo` package does it for you): {{ preprocessing }}

Reproduce: `{{ command }}`

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
"""


def results_row(name, m):
    bv = "—" if m["bacterial_viral_auc"] is None else f"{m['bacterial_viral_auc']:.3f}"
    cells = [name, m["images"], f"{m['accuracy']:.3f}", f"{m['roc_auc']:.4f}", f"{m['sensitivity']:.3f}",
             f"{m['specificity']:.3f}", f"{m['precision']:.3f}", f"{m['f1']:.3f}", bv, f"{m['ece']:.3f}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def build_card(config, metrics):
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
    )
