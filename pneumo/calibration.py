"""Temperature scaling: softmax(log(p) / T), fitted on validation by training.

T > 1 softens over-confident probabilities; T = 1 leaves them as they are.
"""

import numpy as np


def apply_temperature(probabilities, temperature):
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)
