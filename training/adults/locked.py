"""The locked adult test split: about 30% of the radiologist-read patients, kept out of every fit.

    python -m training.adults.locked ../shared/data/adult_cxr    # writes locked_split.json, once

Every figure tuned on the same films that choose features, pooling, strength
and threshold flatters the answer. So before anything is trained on an adult
folder, a share of the patients that radiologists read (stratified by their
reading, every film of theirs, read or not) is locked away: no fit, no
calibration list, no epoch choice may touch them. They are scored once per
shipping candidate (training/adults/locked_score.py) and the shipping rule is
judged there.

For the project's own adult folder the split is committed (locked_split.json,
next to this file, pinned to the sha256 of that folder's patients and readings), so that a
change of library or of code cannot move a patient across. Any other folder
(tests' synthetic ones, someone's own data) gets the same rule computed.
"""

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from training.adults.answer import read_labels

LOCK_FILE = Path(__file__).with_name("locked_split.json")
FRACTION = 0.3
FOLDS = 10  # three folds of ten: 30%
SEED = 2026


def readings_digest(folder) -> str:
    """sha256 of labels.csv's (patient, reading) pairs, in its order: what the lock depends on. A copy whose
    files were re-encoded and renamed (training/children/offline.py) keeps its lock."""
    pairs = [[row["patient"], row.get("rsna_class", "")] for row in read_labels(folder).values()]
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def choose_locked(rows, fraction=FRACTION, seed=SEED) -> list[str]:
    """About `fraction` of the patients with a radiologist reading, stratified by reading, grouped by patient."""
    read = [row for row in rows if row.get("rsna_class")]
    if len(read) < FOLDS:
        return []
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    picked = round(fraction * FOLDS)
    held = [index for _, fold in list(folds.split(np.zeros(len(read)), [r["rsna_class"] for r in read],
                                                  [r["patient"] for r in read]))[:picked] for index in fold]
    return sorted({read[i]["patient"] for i in held})


def locked_patients(folder) -> frozenset[str]:
    """The locked patients of an adult folder: the committed lock when it is that folder's, else computed."""
    folder = Path(folder)
    if not (folder / "labels.csv").is_file():
        return frozenset()
    if LOCK_FILE.is_file():
        lock = json.loads(LOCK_FILE.read_text())
        if lock["readings_sha256"] == readings_digest(folder):
            return frozenset(lock["patients"])
    return frozenset(choose_locked(list(read_labels(folder).values())))


def open_rows(folder) -> dict:
    """labels.csv's rows (file name -> row) of the patients that fits may use: every one not locked."""
    locked = locked_patients(folder)
    return {name: row for name, row in read_labels(folder).items() if row["patient"] not in locked}


def open_films(folder, paths) -> list[Path]:
    """`paths` of `folder` without the locked patients' films (a film labels.csv does not list has no
    patient, so it cannot be locked)."""
    locked = locked_patients(folder)
    patient = {name: row["patient"] for name, row in read_labels(folder).items()}
    return [p for p in paths if patient.get(Path(p).name) not in locked]


def write_lock(folder, out=LOCK_FILE) -> dict:
    """Choose and write the lock of `folder`; refuses to replace a lock that exists."""
    if Path(out).exists():
        raise SystemExit(f"{out} exists: a lock is chosen once (delete it only for a new adult folder)")
    rows = list(read_labels(folder).values())
    patients = choose_locked(rows)
    chosen = set(patients)
    readings = dict(Counter(row["rsna_class"] for row in rows if row["patient"] in chosen and row.get("rsna_class")))
    lock = {"readings_sha256": readings_digest(folder), "fraction": FRACTION, "seed": SEED,
            "rule": f"sklearn StratifiedGroupKFold({FOLDS}, shuffle, seed {SEED}) over the read films, "
                    f"by reading and patient: the first {round(FRACTION * FOLDS)} folds' patients",
            "read_patients": len({r["patient"] for r in rows if r.get("rsna_class")}),
            "read_films": readings, "patients": patients}
    Path(out).write_text(json.dumps(lock, indent=1) + "\n")
    return lock


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.adults.locked", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adult_data", help="the adult folder (labels.csv with patient and rsna_class)")
    args = p.parse_args(argv)
    lock = write_lock(args.adult_data)
    print(json.dumps({k: v for k, v in lock.items() if k != "patients"} | {"patients": len(lock["patients"])}))


if __name__ == "__main__":
    main()
