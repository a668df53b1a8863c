"""The one fit of a linear read-out (pneumo/answers/readout.py): standardised log1p features,
a class-balanced, L2-regularised logistic regression. The population check and the adult
answer are fitted by it."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from pneumo.answers.readout import log_features


def fit_readout(readout_class, features, y, strength, seed=0, **fields):
    """`readout_class` (a LinearReadout) fitted on (N, features) `features` and 0/1 labels `y`;
    `strength` is scikit-learn's C (inverse L2); `fields` fill the class's other fields.
    Returned as it will be saved (FittedFile.as_saved: float32 weights), so that every probability the
    fit goes on to compute, and every threshold chosen on them, is the one that serving computes."""
    x = log_features(features)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=strength, class_weight="balanced", max_iter=3000, random_state=seed)
    model.fit((x - mean) / scale, y)
    return readout_class(mean, scale, model.coef_[0], float(model.intercept_[0]), **fields).as_saved()
