"""Evaluation of 3-class predictions: pneumonia vs normal, bacterial vs viral."""

import numpy as np
from sklearn import metrics

from pneumo.answers.classes import BACTERIAL, NORMAL, VIRAL, pneumonia_probability


def expected_calibration_error(y_true, probability, bins=10):
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    y_true, probability = np.asarray(y_true), np.asarray(probability)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(y_true[members].mean() - probability[members].mean())
    return float(error)


def choose_threshold(y_true, probability):
    """The P(pneumonia) cut that maximises accuracy, halfway between two
    observed probabilities: a cut on an observed value would put that image's
    label at the mercy of rounding (runtimes differ by 1e-6). Ties go to the
    cut nearest 0.5, so that a flat stretch does not push it to an extreme."""
    observed = np.unique(probability)
    candidates = np.concatenate([[observed[0] / 2], (observed[:-1] + observed[1:]) / 2, [(observed[-1] + 1) / 2]])
    accuracy = np.array([np.mean((probability >= t) == y_true) for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def bacterial_viral_auc(labels, probabilities):
    """AUC of P(viral | pneumonia) among the true pneumonias; None if one kind is absent."""
    sick = (labels == BACTERIAL) | (labels == VIRAL)
    kinds = labels[sick] == VIRAL
    if kinds.all() or not kinds.any():
        return None
    viral_share = probabilities[sick, VIRAL] / np.maximum(pneumonia_probability(probabilities[sick]), 1e-12)
    return float(metrics.roc_auc_score(kinds, viral_share))


def evaluate(labels, probabilities, threshold):
    """Every figure the model card reports, as plain floats and lists."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    y = labels != NORMAL
    p = pneumonia_probability(probabilities)
    predicted = p >= threshold
    tn, fp, fn, tp = metrics.confusion_matrix(y, predicted, labels=[False, True]).ravel()
    return {
        "images": int(len(labels)),
        "threshold": float(threshold),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "sensitivity": float(tp / max(tp + fn, 1)),
        "specificity": float(tn / max(tn + fp, 1)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None,
        "bacterial_viral_auc": bacterial_viral_auc(labels, probabilities),
        "ece": expected_calibration_error(y, p),
        "confusion_matrix_3class": metrics.confusion_matrix(
            labels, probabilities.argmax(axis=1), labels=[NORMAL, BACTERIAL, VIRAL]
        ).tolist(),
    }
