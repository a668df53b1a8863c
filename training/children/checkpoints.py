"""Per-epoch checkpoints, early stopping on the selection split, resume.

    CHECKPOINT_DIR/last.keras   model + optimizer after the latest epoch
    CHECKPOINT_DIR/best.keras   the epoch with the best selection score
    CHECKPOINT_DIR/state.json   epoch, best score, patience left, history
    CHECKPOINT_DIR/epochNNN.weights.h5   with --average-best K: the K best epochs
"""

import json
import time
from pathlib import Path

import keras
from sklearn.metrics import roc_auc_score

from pneumo.answers.classes import NORMAL, pneumonia_probability

from training.children.averaging import keep_epoch
from training.report.metrics import bacterial_viral_auc
from training.children.model import ADULT_OUTPUT, CHILD_OUTPUT


def fresh_state():
    return {"epoch": 0, "best_score": None, "best_epoch": None, "wait": 0, "finished": False, "history": []}


def read_state(checkpoint_dir):
    path = Path(checkpoint_dir) / "state.json"
    return json.loads(path.read_text()) if path.exists() else fresh_state()


class SelectionCheckpoint(keras.callbacks.Callback):
    """Scores each epoch on the selection split (ROC AUC of P(pneumonia)),
    saves last/best, and stops after `patience` epochs without a better score
    or when `max_minutes` have passed. With `average_best` > 1 it also keeps
    the weights of that many best epochs (training/children/averaging.py). A joint run
    (training/children/joint.py) passes `adult_selection` (inputs, labels): the score is
    then the mean of the children's and the adults' ROC AUC."""

    def __init__(self, checkpoint_dir, selection_inputs, selection_labels, patience, max_minutes, state, log,
                 average_best=1, adult_selection=None):
        super().__init__()
        self.adult_selection = adult_selection
        self.average_best = average_best
        self.dir = Path(checkpoint_dir)
        self.inputs, self.labels = selection_inputs, selection_labels
        self.patience, self.deadline = patience, time.time() + 60 * max_minutes if max_minutes else None
        self.state, self.log = state, log

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.model.predict(self.inputs, batch_size=32, verbose=0)
        if isinstance(probabilities, dict):  # a joint run: the children's output
            probabilities = probabilities[CHILD_OUTPUT]
        score = roc_auc_score(self.labels != NORMAL, pneumonia_probability(probabilities))
        row = {k: float(v) for k, v in (logs or {}).items()}
        row.update(epoch=epoch + 1, selection_auc=float(score),
                   selection_bacterial_viral_auc=bacterial_viral_auc(self.labels, probabilities))
        if self.adult_selection is not None:
            adult_score = self._adult_auc()
            row.update(selection_children_auc=float(score), selection_adult_auc=adult_score)
            score = (score + adult_score) / 2
            row["selection_auc"] = float(score)
        self.state["history"].append(row)
        self.state["epoch"] = epoch + 1
        if self.state["best_score"] is None or score > self.state["best_score"]:
            self.state.update(best_score=float(score), best_epoch=epoch + 1, wait=0)
            self.model.save(self.dir / "best.keras")
        else:
            self.state["wait"] += 1
        if self.average_best > 1:
            keep_epoch(self.model, self.dir, self.state, epoch + 1, float(score), self.average_best)
        self.model.save(self.dir / "last.keras")
        self.log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
        if self.state["wait"] >= self.patience:
            self.log(f"early stop: no better selection AUC for {self.patience} epochs")
            self.state["finished"] = True
            self.model.stop_training = True
        elif self.deadline and time.time() > self.deadline:
            self.log("time budget spent: stopping; --resume continues")
            self.model.stop_training = True
        self._write_state()

    def _adult_auc(self) -> float:
        inputs, labels = self.adult_selection
        adult = self.model.predict(inputs, batch_size=32, verbose=0)[ADULT_OUTPUT][:, 0]
        return float(roc_auc_score(labels, adult)) if 0 < labels.sum() < len(labels) else 0.5

    def on_train_end(self, logs=None):
        if self.state["epoch"] >= self.params.get("epochs", 0):
            self.state["finished"] = True
        self._write_state()

    def _write_state(self):
        (self.dir / "state.json").write_text(json.dumps(self.state, indent=1))
