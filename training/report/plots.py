"""The evaluation report's figures, written as PNG files."""

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from pneumo.answers.classes import NORMAL, pneumonia_probability


def plot_roc(predictions, path):
    """One ROC curve of P(pneumonia) per evaluated split."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, probabilities, figures) in predictions.items():
        fpr, tpr, _ = roc_curve(labels != NORMAL, pneumonia_probability(probabilities))
        ax.plot(fpr, tpr, label=f"{name} (AUC {figures['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="Pneumonia vs normal ROC")
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_reliability(labels, probabilities, path, bins=10):
    """Observed pneumonia rate against predicted P(pneumonia), per bin."""
    y, p = labels != NORMAL, pneumonia_probability(probabilities)
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot([p[which == b].mean() for b in filled], [y[which == b].mean() for b in filled], "o-", label="model")
    ax.set(xlabel="predicted P(pneumonia)", ylabel="observed pneumonia rate", title="Reliability (selection split)")
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_training(history, path):
    """Training loss and accuracy, and the selection split's AUC, per epoch."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row.get("loss") for row in history], "o-", label="training loss")
    left.set(xlabel="epoch", title="Loss")
    right.plot(epochs, [row.get("accuracy") for row in history], "o-", label="training accuracy (balanced)")
    right.plot(epochs, [row["selection_auc"] for row in history], "o-", label="selection ROC AUC")
    right.set(xlabel="epoch", title="Accuracy and AUC")
    right.legend(loc="lower right")
    _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
