"""The locked adult test split: chosen by a rule, committed for the project's own adult folder, and
kept out of every fit (the fits themselves are audited in tests/test_adult.py and tests/test_joint.py)."""

import csv
import json

import pytest

from tests.conftest import ADULT_DATA, require
from training.adults import answer as adult_fit
from training.adults.answer import read_labels
from training.adults.locked import (FRACTION, LOCK_FILE, choose_locked, locked_patients, open_films, open_rows,
                                    readings_digest, write_lock)

READINGS = (adult_fit.OPACITY, adult_fit.NORMAL, adult_fit.OTHER)


def write_labels(folder, patients=60, films_each=2):
    """labels.csv alone (the lock reads no image): each patient's films share one reading; every
    fifth patient also has an unread film."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "patient", "rsna_class"])
        writer.writeheader()
        for patient in range(patients):
            for film in range(films_each):
                writer.writerow({"file": f"nih_{patient:08d}_{film:03d}.jpeg", "patient": str(patient),
                                 "rsna_class": READINGS[patient % 3]})
            if patient % 5 == 0:
                writer.writerow({"file": f"nih_{patient:08d}_099.jpeg", "patient": str(patient), "rsna_class": ""})
    return folder


def test_the_rule_locks_about_thirty_percent_of_read_patients_stratified_with_all_their_films(tmp_path):
    folder = write_labels(tmp_path / "adults")
    rows = read_labels(folder)
    locked = locked_patients(folder)
    assert locked == frozenset(choose_locked(list(rows.values())))
    assert len(locked) == pytest.approx(FRACTION * 60, abs=3)
    by_reading = {reading: {p for p in locked if READINGS[int(p) % 3] == reading} for reading in READINGS}
    assert all(len(chosen) >= 4 for chosen in by_reading.values()), by_reading  # each reading has its share
    kept = open_rows(folder)
    assert not {row["patient"] for row in kept.values()} & locked
    assert len(kept) + sum(row["patient"] in locked for row in rows.values()) == len(rows)
    unread_of_locked = [name for name, row in rows.items() if row["patient"] in locked and not row["rsna_class"]]
    assert unread_of_locked and not set(unread_of_locked) & set(kept)  # every film of theirs, read or not
    paths = [folder / name for name in rows] + [folder / "not_in_labels.jpeg"]
    assert {p.name for p in open_films(folder, paths)} == set(kept) | {"not_in_labels.jpeg"}


def test_the_lock_survives_renamed_files_and_moves_when_readings_change(tmp_path):
    folder = write_labels(tmp_path / "adults")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "labels.csv").write_text((folder / "labels.csv").read_text().replace(".jpeg", ".webp"))
    assert readings_digest(renamed) == readings_digest(folder)
    assert locked_patients(renamed) == locked_patients(folder)
    other = write_labels(tmp_path / "other", patients=61)
    assert readings_digest(other) != readings_digest(folder)


def test_a_lock_is_written_once(tmp_path):
    folder = write_labels(tmp_path / "adults")
    lock = write_lock(folder, tmp_path / "lock.json")
    assert sorted(lock["patients"]) == sorted(locked_patients(folder))
    assert lock["readings_sha256"] == readings_digest(folder)
    with pytest.raises(SystemExit, match="chosen once"):
        write_lock(folder, tmp_path / "lock.json")


def test_the_committed_lock_is_the_rule_on_the_project_adult_folder():
    require(ADULT_DATA.is_dir(), f"adult X-rays not found at {ADULT_DATA}")
    lock = json.loads(LOCK_FILE.read_text())
    assert lock["readings_sha256"] == readings_digest(ADULT_DATA)  # else the lock would silently not apply
    rows = list(read_labels(ADULT_DATA).values())
    assert lock["patients"] == choose_locked(rows)
    assert locked_patients(ADULT_DATA) == frozenset(lock["patients"])
    read = {row["patient"] for row in rows if row["rsna_class"]}
    assert set(lock["patients"]) <= read
    assert len(lock["patients"]) / len(read) == pytest.approx(FRACTION, abs=0.02)
    films = [row["rsna_class"] for row in rows if row["patient"] in set(lock["patients"]) and row["rsna_class"]]
    assert {reading: films.count(reading) for reading in READINGS} == lock["read_films"]
