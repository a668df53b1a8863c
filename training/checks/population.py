"""The population check's fit and its honest measurement (pneumo/checks/population.py).

Children (inside) against adult films (outside), on the served model's
region features (pneumo/model/predict.py), every fitted variant of every film on
both sides (training/checks/variants.py). Every adult film comes from one hospital
(NIH), so a check could learn "NIH versus Guangzhou" (scanner, file format,
framing) instead of "adult versus young child". The guards:

- the variants randomise what differs between sources but not between ages
  (framing, resolution, compression, exposure, phone photos), on both sides;
- a strongly regularised linear model (C below), on the network's features
  of anatomy at 128 px rather than pixels or file details;
- measured, not assumed: adult films re-rendered in ways no fit saw
  ("unseen": equalised, collimated, cropped) must still be caught
  (benchmarks/scope_eval.py prints it).

The threshold comes from cross-validation over the selection split's
children and the adults (five folds by patient): at most GATED_CHILDREN of
the children, each scored by a check fitted without it, lose their verdict.
Its figures (population.json `cross_validated`) judge each film at a
threshold chosen without its own fold, so they are measured on films that
neither the check nor the threshold saw.
"""

from dataclasses import replace

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.answers.calibration import calibrate
from pneumo.answers.classes import pneumonia_probability
from pneumo.checks.population import PopulationCheck
from training.readout import fit_readout

C = 0.01  # inverse L2 strength: strong, so that many weak anatomical cues outweigh a few source-specific ones
FOLDS = 5
GATED_CHILDREN = 0.01
FITTED = ("original", "site", "photo")  # "unseen" variants are only measured


def reaches_check(features, chest) -> np.ndarray:
    """(N,) bool: not refused as "not a chest X-ray" before the population check."""
    refused = features.refused_by_statistics.copy()
    if chest is not None:
        refused |= chest.distance(features.pooled) > chest.threshold
    return ~refused


def rows(sets, chest, selection_rows=None, adult_rows=None):
    """(X, y) for a fit: the fitted variants of all train/ children and of the chosen
    selection children and adults, less what the chest-X-ray check refuses first."""
    xs, ys = [], []
    for scored, chosen in ((sets.train, None), (sets.selection, selection_rows), (sets.adults, adult_rows)):
        chosen = np.arange(len(scored)) if chosen is None else chosen
        for name in FITTED:
            features = scored.variants[name]
            keep = chosen[reaches_check(features, chest)[chosen]]
            xs.append(features.regions[keep])
            ys.append(scored.outside[keep])
    return np.concatenate(xs), np.concatenate(ys)


def fit(xy, seed=0) -> PopulationCheck:
    """A balanced logistic regression on standardised log1p features; threshold left at 0.5."""
    x, y = xy
    return fit_readout(PopulationCheck, x, y, C, seed, threshold=0.5)


def cross_validate(sets, chest, seed=0) -> dict:
    """Out-of-fold P(outside) of every selection child and adult, per variant, the threshold they give
    (the one that ships), and per variant the share left without a verdict by both checks, each film
    judged at a threshold chosen without its own fold (`thresholds`): at the shipped threshold the
    children's share would be GATED_CHILDREN by construction, since those very scores chose it."""
    n = len(sets.selection)
    outside = np.concatenate([sets.selection.outside, sets.adults.outside])
    groups = np.concatenate([sets.selection.groups, sets.adults.groups])
    names = list(sets.selection.variants)
    scores = {name: np.empty(len(outside)) for name in names}
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    held_out, fold = [], np.empty(len(outside), int)
    for fit_rows, held in folds.split(np.zeros(len(outside)), outside, groups):
        fold[held] = len(held_out)
        check = fit(rows(sets, chest, fit_rows[fit_rows < n], fit_rows[fit_rows >= n] - n), seed)
        for name in names:
            both = np.concatenate([sets.selection.variants[name].regions, sets.adults.variants[name].regions])
            scores[name][held] = check.adult_probability(both[held])
        held_out.append(held)
    split = {name: (s[:n], s[n:]) for name, s in scores.items()}
    reaching = reaches_check(sets.selection.variants["original"], chest)
    threshold = cut_above(split["original"][0][reaching], GATED_CHILDREN)
    film_threshold = np.empty(len(outside))
    for held in held_out:  # from the children of the other folds only
        others = np.setdiff1d(np.flatnonzero(reaching), held)
        film_threshold[held] = cut_above(split["original"][0][others], GATED_CHILDREN)
    thresholds = (film_threshold[:n], film_threshold[n:])
    # No verdict: refused as no chest X-ray, or gated as outside the population.
    gated = {name: {who: float(np.mean(~reaches_check(scored.variants[name], chest) | (s >= t)))
                    for who, s, t, scored in (("children", c, thresholds[0], sets.selection),
                                              ("adults", a, thresholds[1], sets.adults))}
             for name, (c, a) in split.items()}
    fold_thresholds = sorted({float(t) for t in film_threshold})
    return {"threshold": threshold, "gated": gated, "scores": split, "thresholds": thresholds,
            "fold_thresholds": fold_thresholds, "folds": (fold[:n], fold[n:])}


def source_counts(adults) -> dict:
    """Adult films per hospital."""
    names, counts = np.unique(adults.sources, return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts)}


def leave_one_source_out(sets, chest, seed=0) -> dict:
    """With adults from two or more hospitals: for each, a check fitted on the children and the other
    hospitals' adults alone, thresholded as the shipped one is (GATED_CHILDREN of the selection children,
    scored out of fold), and the share of that hospital's films (each variant) it routes as adults. This
    is how a hospital none of the fits saw fares."""
    sources = sorted(source_counts(sets.adults))
    if len(sources) < 2:
        return {}
    out = {}
    for source in sources:
        others = np.flatnonzero(sets.adults.sources != source)
        kept = replace(sets, adults=sets.adults.take(others))
        threshold = cross_validate(kept, chest, seed)["threshold"]
        check = fit(rows(kept, chest), seed)
        mine = sets.adults.sources == source
        out[source] = {"films": int(mine.sum()), "threshold": threshold, "routed_as_adults": {
            name: float(np.mean(reaches_check(features, chest)[mine]
                                & (check.adult_probability(features.regions[mine]) >= threshold)))
            for name, features in sets.adults.variants.items()}}
    return out


def cut_above(children, share) -> float:
    """A threshold that gates at most `share` of `children` (their P(adult)): midway between the highest
    probability that keeps its verdict and the next one above it, so that no film sits near the cut and
    rounding cannot move one across it (the fold checks that scored them are as saved: training/readout.py)."""
    kept = float(np.quantile(children, 1 - share, method="higher"))
    above = children[children > kept]
    return (kept + float(above.min())) / 2 if len(above) else (kept + 1.0) / 2


def adult_model_figures(loaded, adults) -> dict:
    """What the pneumonia model answers on the adult films (pneumonia vs normal by labels.csv's `finding`: NIH
    labels mined from report text, not radiologists' readings; adult.json's `child_model_roc_auc` is on those).
    NaN figures when the films have no labels.csv with both findings."""
    keep = adults.pneumonia >= 0
    truth = adults.pneumonia[keep]
    figures = {"labels": "NIH finding, mined from report text", "adult_films": int(keep.sum()),
               "adult_pneumonia": int(truth.sum()),
               "sensitivity": float("nan"), "specificity": float("nan"), "roc_auc": float("nan")}
    if len(set(truth)) < 2:
        return figures
    sick = pneumonia_probability(calibrate(adults.variants["original"].raw[keep], loaded.config))
    said = sick >= loaded.config["threshold"]
    return {**figures, "sensitivity": float(said[truth == 1].mean()), "specificity": float((~said[truth == 0]).mean()),
            "roc_auc": float(roc_auc_score(truth, sick))}
