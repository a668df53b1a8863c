"""The adult answer: does an adult's chest X-ray show pneumonia, yes or no.

The population check (pneumo/checks/population.py) routes an adult film here, and
a linear read-out of convolutional maps answers:

    P(pneumonia) = sigmoid(slope * (coef . standardise(log1p(features)) + intercept) + offset)

`features` are `adult_features(maps, weights)`: each channel's mean and
maximum over the film's aerated lung as brightness profiles find it
(pneumo/anatomy/lungs.py `lung_fields`; where lungs usually lie when none are
found). Pooled over the whole film instead, the heart, the shoulders and the
labels weigh as much as the lungs. Refitted on the lungs the segmenter draws
(pneumo/anatomy/segmenter.py), the answer ranked lower (radiologist-read films,
5 folds by patient: ROC AUC 0.913 against 0.929, sensitivity 0.856 against
0.890, specificity 0.769 against 0.806): the drawn lungs leave out much of
a consolidation, so the profiles' fields stay for pooling, while the drawn
anatomy decides whether a film shows lungs at all (pneumo/checks/scope.py).

Whose maps: a head with `trunk = 1` reads the adult trunk's
(adult_trunk.int8.onnx, training/adults/trunk.py: pretrained VGG16
convolutions at 160 px that never saw a child): a second pass, for adult
films only. The children's model learnt its later blocks on children at
128 px, and there the adult signal fades: the same read-out of its own maps
ranked radiologists' opacities lower (the model card has both). Heads
fitted before (`trunk = 0`) read the children's model's maps from the pass
made anyway, and older ones (`lungs = 0`) pool over the whole film.

The slope and offset recalibrate the regression's balanced scores to the
radiologist-read films (Platt scaling, fitted out of fold). Adults get no
bacterial/viral split: nothing in the adult data supports one.

training/adults/answer.py fits it (NIH films, validated on RSNA radiologist labels
by patient-level cross-validation) and saves it as adult.npz, with its
figures in adult.json. A head that missed the shipping rule is saved with
`shipped = 0`: serving then keeps adults outside the population.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.answers.readout import LinearReadout, log_features, sigmoid
from pneumo.model.run_folder import ADULT, ADULT_REPORT

LUNG_SHARE = 0.25  # a map cell takes part in the maximum when at least this share of it is lung


def adult_features(maps, weights=None) -> np.ndarray:
    """(N, h, w, C) maps -> (N, 2C): each channel's mean and its maximum, over the lungs
    (`weights`: (N, h, w), `lung_weights` of each film) or, without weights, over the film.
    The maximum keeps a small, dense opacity that the mean would dilute."""
    maps = np.asarray(maps)
    if weights is None:
        return np.concatenate([maps.mean(axis=(1, 2)), maps.max(axis=(1, 2))], axis=1)
    w = np.asarray(weights, np.float64)[..., None]
    mean = (maps * w).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1e-12)
    inside = w >= LUNG_SHARE
    inside |= ~inside.any(axis=(1, 2), keepdims=True)  # lungs smaller than a cell: the whole film
    peak = np.where(inside, maps, -np.inf).max(axis=(1, 2))
    return np.concatenate([mean, peak], axis=1).astype(maps.dtype)


def lung_weights(fields, grid, aerated=True) -> np.ndarray:
    """pneumo.anatomy.lungs.LungFields -> (h, w): the share of each cell of a map grid that is aerated lung,
    the dark part of the lung fields (pneumo/anatomy/lungs.py): pooled over the whole fields, reaching
    behind the diaphragm and the heart, the answer ranked opacities lower (docs/benchmarks.md).
    aerated=False: the share of the whole fields (where radiologists' boxes lie).
    The lung masks are on the square the model sees, so the grid lies on them cell for cell."""
    mask = Image.fromarray((fields.aerated_mask if aerated else fields.mask).astype(np.float32))
    return np.asarray(mask.resize((grid[1], grid[0]), Image.Resampling.BOX), np.float64)


@dataclass
class AdultHead(LinearReadout):
    """A linear read-out of `adult_features`, recalibrated (slope, offset) to radiologists' readings."""
    FILE = ADULT  # in the run folder; absent: adults stay outside the population
    slope: float  # Platt scaling of the regression's score, fitted out of fold
    offset: float
    threshold: float  # calibrated P(pneumonia) at or above it: PNEUMONIA
    shipped: float  # 1: met the shipping rule when fitted (adult.json says how); 0: adults stay out
    lungs: float = 0.0  # 1: its features are pooled over the lung fields; 0: over the whole film
    trunk: float = 0.0  # 1: it reads the adult trunk's maps (adult_trunk.int8.onnx); 0: the children's model's

    def probability(self, features) -> np.ndarray:
        """(N, features) -> (N,) calibrated P(pneumonia)."""
        return sigmoid(self.slope * self.score(features) + self.offset)

    def channel_weights(self, maps, weights=None) -> np.ndarray:
        """(N, h, w, C) -> (N, C): d score / d map, averaged over the map (Grad-CAM's weights).
        The mean's term is spread over the positions it pools (its position weights sum to 1);
        the maximum's lands on its peak only, so each one's share of the average is 1/(h w)."""
        maps = np.asarray(maps, np.float64)
        channels = maps.shape[-1]
        features = adult_features(maps, weights)
        gradient = self.coef / self.scale / (1.0 + np.maximum(features, 0.0))  # d score / d feature
        per_position = maps.shape[1] * maps.shape[2]
        return (gradient[:, :channels] + gradient[:, channels:]) / per_position

    @classmethod
    def read_out(cls, coef, intercept) -> "AdultHead":
        """A joint run's trained read-out (training/children/model.py): on the log features as they are
        (no standardisation), pooled over the whole film, not yet calibrated, not shipped."""
        coef = np.asarray(coef, np.float64)
        return cls(np.zeros(len(coef)), np.ones(len(coef)), coef, float(intercept), slope=1.0, offset=0.0,
                   threshold=0.5, shipped=0.0).as_saved()  # scored as served: its threshold is chosen on these


def _panel_figures(measured) -> dict:
    keys = ("roc_auc", "sensitivity", "specificity", "specificity_all_read", "ece")
    return {key: float(measured[key]) for key in keys if isinstance(measured.get(key), (int, float))}


def shipped_figures(folder, head) -> dict | None:
    """What the model panel and `pneumo info` say of the adult answer: the threshold of `head`, the
    AdultHead that serves (pneumo.model.loading's `adult_head`: the cut to the last bit), and its
    cross-validated (tuning) figures on radiologist-read films (adult.json) and, once scored, its figures on the
    locked split (`locked`); None when no adult answer serves
    (`head` None: none shipped, or it cannot load its trunk) or adult.json is unreadable."""
    if head is None:
        return None
    try:
        report = json.loads((Path(folder) / ADULT_REPORT).read_text())
        if not report.get("shipped"):
            return None
        measured = report["cross_validated"]
        shown = {"threshold": float(head.threshold), "films_read": sum(measured["films"].values()),
                 "measured_on": report.get("measured_on", ""), "metrics": _panel_figures(measured)}
        if report.get("locked"):  # the same answer on patients no fit or choice saw (training/report/locked_split.py)
            locked = report["locked"]["figures"]
            shown["locked"] = {"films_read": sum(locked["films"].values()), "patients": int(locked["patients"]),
                               "metrics": _panel_figures(locked)}
        return shown
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no report, or one this code cannot read: the panel leaves adults out
