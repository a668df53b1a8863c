"""Fit the opacity map (pneumo/answers/opacity.py): where on an adult film radiologists boxed an opacity.

    python -m training.adults.opacity RUN_FOLDER --adult-data ../shared/data/adult_cxr

(training/checks/scope.py fits it too, with the adult answer it belongs to.)

What it learns from: every film that radiologists read (RSNA: boxes around
each `Lung Opacity`; `Normal` and "not normal, no opacity" films have none)
and the NIH Pneumonia boxes, each film also mirrored (an opacity looks the
same on either side; one more trunk pass, at training time only). Each
film goes through the served steps: greyscale, its lung fields
(pneumo/anatomy/lungs.py), the adult trunk's maps. Its lung cells (at least
LUNG_SHARE of the cell inside the fields) are what the map scores.

How it learns: a linear score of each cell's features, trained so that on
every boxed film the cells inside a box outscore the film's other lung
cells (a softmax over the film's cells: the pointing game, made smooth).
Then a logistic read of that score, on the cells clearly in a box (at
least half inside) or out of every box, boxed films and films read
without an opacity alike, turns it into P(the cell lies inside a box).

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
from scipy import optimize
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.analysis import films_as_read
from pneumo.answers.adult import LUNG_SHARE, AdultHead, lung_weights
from pneumo.model.loading import load_model
from pneumo.anatomy.location import lungs_or_assumed
from pneumo.answers.opacity import OpacityMap, cell_features
from pneumo.model.predict import trunk_maps
from pneumo.model.run_folder import ADULT_OPACITY, ADULT_REPORT

from training.adults.answer import read_labels
from training.adults.locked import open_rows
from training.report.card import rewrite_card
from training.children.data import open_grey

STRENGTH = 1e-2  # L2 on the ranking's weights; held-out pointing was flat from 1e-3 to 1e-2 (docs/benchmarks.md)
MAX_ITERATIONS = 300
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
    """The films of `folder` that radiologists read or boxed (the locked patients' aside), read as serving
    reads them (pneumo.analysis.films_as_read): a film it mirrors back gets its boxes mirrored too; one it
    turns or crops out of a photo is left out, as the boxes were drawn on the file's own frame."""
    rows = [row for row in open_rows(folder).values()
            if (row.get("rsna_class") or boxes_of(row)) and (Path(folder) / row["file"]).is_file()]
    films, left_out = [], []
    for i, row in enumerate(rows):
        film = films_as_read(loaded, [open_grey(Path(folder) / row["file"])])[0][0]
        if film.turned or film.is_photo:
            left_out.append(row["file"])
            continue
        image, boxes = film.image, boxes_of(row)
        if film.mirrored:
            boxes = [(BOX_SIDE - x - w, y, w, h) for x, y, w, h in boxes]
        maps = trunk_maps(loaded.adult_trunk, [image, ImageOps.mirror(image)])
        lung = lung_weights(lungs_or_assumed(image), maps.shape[1:3], aerated=False)
        films.append(BoxedFilm(row["file"], row["patient"], boxes, maps[0], lung, maps[1]))
        if (i + 1) % 100 == 0:
            log(f"opacity map: {i + 1} of {len(rows)} films read")
    if left_out:
        log(f"opacity map: {len(left_out)} films left out, turned or cropped as served: {', '.join(left_out)}")
    return films


def film_views(film) -> list[tuple[np.ndarray, np.ndarray]]:
    """The lung cells of a film and of its mirrored copy: [(features (n, 2C), share inside a box (n,))] x 2."""
    cover = _cover(film.boxes, film.lung.shape)
    views = []
    for maps, lung, box in ((film.maps, film.lung, cover), (film.mirrored_maps, film.lung[:, ::-1], cover[:, ::-1])):
        keep = lung >= LUNG_SHARE
        views.append((cell_features(maps[None])[0][keep], box[keep]))
    return views


def fit(films, strength=STRENGTH) -> OpacityMap:
    """An opacity map fitted on the lung cells of `films` (BoxedFilm)."""
    return fit_views([view for film in films for view in film_views(film)], strength)


def fit_views(views, strength=STRENGTH) -> OpacityMap:
    """An opacity map from films' lung cells (film_views): weights that rank each boxed film's cells
    (`_pointing_weights`), then a logistic read of that score on the cells clearly in or out of a box, so
    that the map says P(the cell lies inside a box)."""
    clear = [(x[(box >= INSIDE) | (box == 0)], box[(box >= INSIDE) | (box == 0)] >= INSIDE) for x, box in views]
    x, inside = np.concatenate([x for x, _ in clear]), np.concatenate([y for _, y in clear])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    ranked = [(((x - mean) / scale).astype(np.float32), box >= INSIDE) for x, box in views if (box >= INSIDE).any()]
    weights = _pointing_weights(ranked, strength)
    score = ((x - mean) / scale) @ weights
    calibration = LogisticRegression().fit(score[:, None], inside)
    return OpacityMap(mean, scale, weights * calibration.coef_[0, 0], float(calibration.intercept_[0]))


def _pointing_weights(ranked, strength) -> np.ndarray:
    """The weights that minimise RankingLoss on the boxed views `ranked`."""
    loss = RankingLoss(ranked, strength)
    found = optimize.minimize(loss, np.zeros(loss.features), jac=True, method="L-BFGS-B",
                              options={"maxiter": MAX_ITERATIONS})
    return found.x


class RankingLoss:
    """w -> (loss, gradient) that rank each view's boxed cells first: the mean over views of
    -log(sum of e^(x.w) over its boxed cells / the same over all its lung cells), plus strength / 2 |w|^2.
    A smooth form of the pointing game (is the peak inside a box?), which a regression on cells one at a
    time does not aim at: held-out peaks in a box 80-81% against its 71% (docs/benchmarks.md)."""

    def __init__(self, ranked, strength):
        self.x = np.concatenate([cells for cells, _ in ranked]).astype(np.float32)
        self.boxed = np.concatenate([inside for _, inside in ranked]).astype(np.float64)
        sizes = [len(inside) for _, inside in ranked]
        self.views, self.strength, self.features = len(sizes), strength, self.x.shape[1]
        self.view, self.starts = np.repeat(np.arange(len(sizes)), sizes), np.cumsum([0] + sizes[:-1])

    def _per_view(self, values):
        return np.bincount(self.view, values, minlength=self.views)

    def __call__(self, w):
        score = (self.x @ w.astype(np.float32)).astype(np.float64)
        e = np.exp(score - np.maximum.reduceat(score, self.starts)[self.view])  # each view's top at 1: no overflow
        lungs, boxes = self._per_view(e), np.maximum(self._per_view(e * self.boxed), 1e-300)
        loss = np.mean(np.log(lungs) - np.log(boxes)) + 0.5 * self.strength * w @ w
        slope = (e / lungs[self.view] - self.boxed * e / boxes[self.view]) / self.views  # d(loss)/d(score)
        return loss, (self.x.T @ slope.astype(np.float32)).astype(np.float64) + self.strength * w


def out_of_fold_maps(films, seed=0, folds=FOLDS) -> dict:
    """File -> the opacity map fitted without its patient's films (folds by patient, stratified by boxes)."""
    boxed = [bool(film.boxes) for film in films]
    patients = [film.patient for film in films]
    splits = StratifiedGroupKFold(n_splits=min(folds, len(set(patients))), shuffle=True, random_state=seed)
    per_film = [film_views(film) for film in films]  # once, not once a fold
    fitted = {}
    for fit_part, held in splits.split(np.zeros(len(films)), boxed, patients):
        opacity = fit_views([view for i in fit_part for view in per_film[i]])
        fitted.update({films[i].file: opacity for i in held})
    return fitted


def fit_and_save(run_folder, adult_dir, log=print) -> dict | None:
    """adult_opacity.npz in the run folder, from the films radiologists boxed; None (and no file)
    when the run folder's adult answer does not read an adult trunk or no film has a box."""
    out = Path(run_folder) / ADULT_OPACITY
    out.unlink(missing_ok=True)
    loaded = load_model(run_folder)
    head = AdultHead.load(run_folder)  # shipped or not yet: the locked split decides that later
    if head is None or not head.trunk or loaded.adult_trunk is None:
        log("opacity map: none (no adult answer with its own trunk): adults' heatmaps are Grad-CAM")
        return None
    films = read_films(loaded, adult_dir, log)
    if not any(film.boxes for film in films):
        log("opacity map: no boxed films in labels.csv, so none")
        return None
    views = [view for film in films for view in film_views(film)]
    fit_views(views).save(out)
    summary = {"films": len(films), "boxed_films": sum(bool(f.boxes) for f in films),
               "lung_cells": sum(len(box) for _, box in views),
               "cells_inside_a_box": sum(int((box >= INSIDE).sum()) for _, box in views), "strength": STRENGTH}
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
    p = argparse.ArgumentParser(prog="python -m training.adults.opacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="a run folder whose adult answer reads an adult trunk")
    p.add_argument("--adult-data", required=True, help="adult films with labels.csv (rsna_class, rsna_boxes)")
    args = p.parse_args(argv)
    if fit_and_save(args.run_folder, args.adult_data) is None:
        sys.exit(1)
    rewrite_card(args.run_folder)


if __name__ == "__main__":
    main()
