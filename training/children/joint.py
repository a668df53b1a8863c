"""One backbone for both populations: the batches of a joint run.

    python -m training.train --data ../shared/data/chest_xray --adult-data ../shared/data/adult_cxr \
        --train-adults [--init-from pneumo/bundled_model] ...

The model (training/children/model.py `with_adult_head`) has two outputs: the
children's three classes and the adults' P(pneumonia). Every batch mixes
both populations; each output's loss is weighted to count only its own
population's films (and the adults' text-mined labels less: training/adults/data.py).
Children's classes and adults' two labels are each balanced by augmented
repeats, as in a children-only run (training/children/augment.py).

Both classes of each population come from one hospital (children:
Guangzhou; adults: NIH), so neither output can learn "which hospital"
as a stand-in for the disease: each compares films of its own population.

The adult output starts as a linear probe (`probe_adult_output`), not at
random: a randomly started read-out learns slowly and, meanwhile, pushes
the shared layers about.
"""

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression

from pneumo.model.preprocess import to_model_input

from training.adults.answer import C
from training.children.augment import BalancedBatches, balanced_indices, batch_seed, xray_augmenter
from training.children.model import ADULT_FEATURES, ADULT_OUTPUT, CHILD_OUTPUT


def probe_adult_output(model, pixels, labels, weights):
    """Set the adult output to a logistic regression (training/adults/answer.py's strength C) fitted on the
    training adults' features as the network starts: linear probe, then fine-tune."""
    features = keras.Model(model.input, model.get_layer(ADULT_FEATURES).output).predict(
        to_model_input(pixels), batch_size=32, verbose=0)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    probe = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
    probe.fit((features - mean) / scale, labels, sample_weight=weights)
    kernel = probe.coef_[0] / scale  # the standardisation folded into the layer
    bias = probe.intercept_[0] - float(mean @ kernel)
    model.get_layer(ADULT_OUTPUT).set_weights([kernel[:, None].astype(np.float32), np.float32([bias])])


class JointBatches(BalancedBatches):
    """Children's and adults' films in one augmented stream, reshuffled each epoch:
    `per_class` films of each children's class and `adult_per_class` of each adult label.
    Yields (inputs, {output: targets}, {output: weights})."""

    def __init__(self, child_pixels, child_labels, adult_pixels, adult_labels, adult_weights, batch_size,
                 per_class, adult_per_class, seed=0, epoch=0, workers=1):
        self.children = len(child_labels)
        self.adult_labels = np.asarray(adult_labels, np.float32)
        self.adult_weights = np.asarray(adult_weights, np.float32)
        self.adult_per_class = adult_per_class
        super().__init__(np.concatenate([child_pixels, adult_pixels]), np.asarray(child_labels), batch_size,
                         per_class, seed=seed, epoch=epoch, workers=workers)

    def _order(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        children = balanced_indices(self.labels, self.per_class, rng)
        adults = balanced_indices(self.adult_labels, self.adult_per_class, rng) + self.children
        return rng.permutation(np.concatenate([children, adults]))

    def __getitem__(self, index):
        picks = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        augmenter = xray_augmenter(batch_seed(self.seed, self.epoch, index))
        inputs = to_model_input(np.stack(augmenter(images=self.pixels[picks])))
        child = picks < self.children
        adult_rows = np.where(child, 0, picks - self.children)
        targets = {CHILD_OUTPUT: np.where(child, self.labels[np.where(child, picks, 0)], 0),
                   ADULT_OUTPUT: np.where(child, 0.0, self.adult_labels[adult_rows]).astype(np.float32)}
        weights = {CHILD_OUTPUT: child.astype(np.float32),
                   ADULT_OUTPUT: np.where(child, 0.0, self.adult_weights[adult_rows]).astype(np.float32)}
        return inputs, targets, weights
