"""Adult films as training data for a joint run, and the patients kept out of it.

    python -m training.train ... --adult-data ../shared/data/adult_cxr --train-adults

A joint run trains one backbone on both populations (training/children/joint.py).
Its adult figures must come from radiologists' labels on patients that no
fit saw: the locked patients (training/adults/locked.py) are held out, every
film of theirs, and training/report/locked_split.py judges the shipping rule
on them. Another share of the read patients (--adult-selection, stratified by
their readings) chooses the epoch, with the children's selection split, as
`val/` does for children, and calibrates the trained read-out; it is not
trained on either.

What the network learns from, on the other patients:

    RSNA "Lung Opacity"                          1, weight 1
    RSNA "Normal", "No Lung Opacity / Not Normal" 0, weight 1 (the rule also
                                                 ranks opacity above every read film)
    unread films, NIH text-mined "pneumonia"     1, weight --text-mined-weight
    unread films, NIH text-mined "normal"        0, weight --text-mined-weight
    anything else                                not used

The text-mined labels are noisy (only 43% of the NIH "pneumonia" films that
radiologists read showed an opacity), hence their smaller weight.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from training.adults.answer import NORMAL, OPACITY, OTHER, read_labels

SELECTION_FRACTION = 0.15  # of the read patients: about 20 opacities, to choose the epoch
TEXT_MINED_WEIGHT = 0.3
TEXT_MINED = {"pneumonia": 1, "normal": 0}


@dataclass(frozen=True)
class AdultSample:
    path: Path
    label: int  # 1 pneumonia (an opacity), 0 not
    weight: float  # 1 for radiologists' readings, less for text-mined labels
    patient: str


def read_rows(folder) -> list[dict]:
    """labels.csv of the adult folder, the rows whose film is there, in the file's order."""
    return [row for name, row in read_labels(folder).items() if (Path(folder) / name).is_file()]


def held_out_patients(rows, fraction, seed=0, excluded=()) -> list[str]:
    """About `fraction` of the patients with a radiologist reading (not in `excluded`), stratified by
    reading (one fold of round(1 / fraction)); every film of theirs stays out of training."""
    read = [row for row in rows if row.get("rsna_class") and row["patient"] not in set(excluded)]
    if not read or fraction <= 0:
        return []
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(read)), [r["rsna_class"] for r in read], [r["patient"] for r in read]))
    return sorted({read[i]["patient"] for i in held})


def selection_patients(rows, held_out, fraction=SELECTION_FRACTION, seed=0) -> list[str]:
    """About `fraction` of all read patients, none of them held out: they choose the epoch."""
    read = {row["patient"] for row in rows if row.get("rsna_class")}
    remaining = len(read - set(held_out))
    share = min(1.0, fraction * len(read) / remaining) if remaining else 0.0
    return held_out_patients(rows, share, seed + 1, excluded=held_out) if 0 < share < 1 else []


def selection_samples(folder, patients) -> list[AdultSample]:
    """The read films of `patients`: opacity 1, every other reading 0."""
    patients = set(patients)
    return [AdultSample(Path(folder) / row["file"], int(row["rsna_class"] == OPACITY), 1.0, row["patient"])
            for row in read_rows(folder) if row["patient"] in patients and row.get("rsna_class")]


def training_samples(folder, excluded, text_mined_weight=TEXT_MINED_WEIGHT) -> list[AdultSample]:
    """The films of every patient not `excluded` (held out, or choosing the epoch), labelled and
    weighted as the module says."""
    excluded = set(excluded)
    samples = []
    for row in read_rows(folder):
        if row["patient"] in excluded:
            continue
        label, weight = _label(row, text_mined_weight)
        if label is not None:
            samples.append(AdultSample(Path(folder) / row["file"], label, weight, row["patient"]))
    return samples


def _label(row, text_mined_weight):
    reading = row.get("rsna_class", "")
    if reading == OPACITY:
        return 1, 1.0
    if reading in (NORMAL, OTHER):
        return 0, 1.0
    if not reading and row.get("finding") in TEXT_MINED and text_mined_weight > 0:
        return TEXT_MINED[row["finding"]], float(text_mined_weight)
    return None, 0.0
