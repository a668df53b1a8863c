"""Fit the opacity map (pneumo/opacity.py): where on an adult film radiologists boxed an opacity.

    python -m training.opacity RUN_FOLDER --adult-data ../shared/data/adult_cxr

(training/scope.py fits it too, with the adult answer it belongs to.)

What it learns from: every film that radiologists read (RSNA: boxes around
each `Lung Opacity`; `Normal` and "not normal, no opacity" films have none)
and the NIH Pneumonia boxes, each film also mirrored (an opacity looks the
same on either side; one more trunk pass, at training time only). Each
film goes through the served steps: greyscale, its lung fields
(pneumo/lungs.py), the adult trunk's maps. Its lung cells (at least
LUNG_SHARE of the cell inside the fields) are the samples: a cell at least
half inside a box is positive; a cell outside every box is negative; a cell
partly in a box is left out, neither one nor the other.

The folds are by patient (`out_of_fold_maps`): benchmarks/localisation.py
judges each boxed film with a map fitted without its patient.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.adult import LUNG_SHARE, lung_weights
from pneumo.loading import load_model
from pneumo.location import lungs_or_assumed
from pneumo.opacity import OpacityMap, cell_features
from pneumo.predict import trunk_maps
from pneumo.run_folder import ADULT_OPACITY, ADULT_REPORT

from .adult import read_labels
from .card import rewrite_card
from .data import open_grey

C = 0.01  # inverse L2 strength; held-out pointing was flat from 0.001 to 0.1 (README)
INSIDE = 0.5  # a cell at least this share inside a box is one of the box's
FOLDS = 5
BOX_SIDE = 384  # the adult folder's boxes are in the pixels of its 384 x 384 films


@dataclass
class BoxedFilm:
    file: str
    patient: str
    boxes: list  # (x, y, w, h) in BOX_SIDE pixels; [] for a film read without an opacity
    maps: np.ndarray  # (h, w, C) the adult trunk's maps of it
    lung: np.ndarray  # (h, w) each cell's share of lung field
    mirrored_maps: np.ndarray  # the same of the film mirrored left to right


def boxes_of(row) -> list:
    """A labels.csv row -> the boxes around its opacities: RSNA's (for `Lung Opacity`) and NIH's Pneumonia boxes
    (none where the file has no such columns)."""
    boxes = [tuple(map(float, b.split(","))) for b in (row.get("rsna_boxes") or "").split(";") if b.strip()] \
        if row.get("rsna_class") == "Lung Opacity" else []
    for item in filter(None, (row.get("nih_boxes") or "").split(";")):
        finding, numbers = item.split(":")
        if finding.strip().lower() == "pneumonia":
            boxes.append(tuple(map(float, numbers.split(","))))
    return boxes


def box_mask(boxes, side) -> np.ndarray:
    """(side, side) bool: inside any of the boxes (BOX_SIDE pixels, scaled to `side`)."""
    mask = np.zeros((side, side), bool)
    s = side / BOX_SIDE
    for x, y, w, h in boxes:
        mask[int(y * s):int(np.ceil((y + h) * s)), int(x * s):int(np.ceil((x + w) * s))] = True
    return mask


def read_films(loaded, folder, log=print) -> list[BoxedFilm]:
    """The films of `folder` that radiologists read or boxed, through the served steps."""
    rows = [row for row in read_labels(folder).values()
            if (row.get("rsna_class") or boxes_of(row)) and (Path(folder) / row["file"]).is_file()]
    films = []
    for i, row in enumerate(rows):
        image = open_grey(Path(folder) / row["file"])
        maps = trunk_maps(loaded.adult_trunk, [image, ImageOps.mirror(image)])
        lung = lung_weights(lungs_or_assumed(image), maps.shape[1:3], aerated=False)
        films.append(BoxedFilm(row["file"], row["patient"], boxes_of(row), maps[0], lung, maps[1]))
        if (i + 1) % 100 == 0:
            log(f"opacity map: {i + 1} of {len(rows)} films read")
    return films


def cells(films) -> tuple[np.ndarray, np.ndarray]:
    """The lung cells of the films and their mirrored copies -> (features (n, 2C), inside a box (n,))."""
    return _joined([film_cells(film) for film in films])


def film_cells(film) -> tuple[np.ndarray, np.ndarray]:
    """One film's lung cells, and its mirrored copy's: (features (n, 2C), inside a box (n,))."""
    cover = _cover(film.boxes, film.lung.shape)
    features, inside = [], []
    mirrored = (film.mirrored_maps, film.lung[:, ::-1], cover[:, ::-1])
    for maps, lung, box in ((film.maps, film.lung, cover), mirrored):
        keep = (lung >= LUNG_SHARE) & ((box >= INSIDE) | (box == 0))
        features.append(cell_features(maps[None])[0][keep])
        inside.append(box[keep] >= INSIDE)
    return _joined(list(zip(features, inside)))


def _joined(parts) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def fit(films) -> OpacityMap:
    """An opacity map fitted on the lung cells of `films` (BoxedFilm)."""
    return fit_cells(*cells(films))


def fit_cells(x, y, c=C) -> OpacityMap:
    """An opacity map fitted on cell features `x` and whether each cell lies inside a box, `y`."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=300).fit((x - mean) / scale, y)
    return OpacityMap(mean, scale, regression.coef_[0], float(regression.intercept_[0]))


def out_of_fold_maps(films, seed=0, folds=FOLDS) -> dict:
    """File -> the opacity map fitted without its patient's films (folds by patient, stratified by boxes)."""
    boxed = [bool(film.boxes) for film in films]
    patients = [film.patient for film in films]
    splits = StratifiedGroupKFold(n_splits=min(folds, len(set(patients))), shuffle=True, random_state=seed)
    per_film = [film_cells(film) for film in films]  # once, not once a fold
    fitted = {}
    for fit_part, held in splits.split(np.zeros(len(films)), boxed, patients):
        opacity = fit_cells(*_joined([per_film[i] for i in fit_part]))
        fitted.update({films[i].file: opacity for i in held})
    return fitted


def fit_and_save(run_folder, adult_dir, log=print) -> dict | None:
    """adult_opacity.npz in the run folder, from the films radiologists boxed; None (and no file)
    when the run folder's adult answer does not read an adult trunk or no film has a box."""
    out = Path(run_folder) / ADULT_OPACITY
    out.unlink(missing_ok=True)
    loaded = load_model(run_folder)
    if loaded.adult_head is None or not loaded.adult_head.trunk or loaded.adult_trunk is None:
        log("opacity map: none (no shipped adult answer with its own trunk): adults' heatmaps are Grad-CAM")
        return None
    films = read_films(loaded, adult_dir, log)
    if not any(film.boxes for film in films):
        log("opacity map: no boxed films in labels.csv, so none")
        return None
    x, y = cells(films)
    fit_cells(x, y).save(out)
    summary = {"films": len(films), "boxed_films": sum(bool(f.boxes) for f in films),
               "cells": int(len(y)), "cells_inside_a_box": int(y.sum()), "c": C}
    log(f"opacity map: {json.dumps(summary)}")
    report = Path(run_folder) / ADULT_REPORT  # the card's sentence on the map comes from here
    if report.is_file():
        report.write_text(json.dumps({**json.loads(report.read_text()), "opacity_map": summary}, indent=2))
    return summary


def _cover(boxes, grid) -> np.ndarray:
    """(h, w): each cell's share inside the boxes."""
    mask = Image.fromarray(box_mask(boxes, BOX_SIDE).astype(np.float32))
    return np.asarray(mask.resize((grid[1], grid[0]), Image.Resampling.BOX), np.float64)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.opacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="a run folder whose adult answer reads an adult trunk")
    p.add_argument("--adult-data", required=True, help="adult films with labels.csv (rsna_class, rsna_boxes)")
    args = p.parse_args(argv)
    if fit_and_save(args.run_folder, args.adult_data) is None:
        sys.exit(1)
    rewrite_card(args.run_folder)


if __name__ == "__main__":
    main()
