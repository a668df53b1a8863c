"""The bundled model's val/ labels on every runtime, against Keras's.

The threshold lies halfway between two observed probabilities
(training/report/metrics.py), so rounding (float ONNX differs from Keras by about
1e-6) cannot flip a label at the cut. int8 quantisation moves a few
probabilities by more than the gap; those films may change label, within
the int8 model's acceptance bound."""

import json

import numpy as np

from pneumo.analysis import analyse_many
from pneumo.inputs.decode import decode
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.model.run_folder import ONNX_REPORT, read_config
from pneumo.model.runtime import KERAS, ONNX_FLOAT, ONNX_INT8
from training.deploy.quantize import MAX_COST

CHUNK = 16


def pneumonia_probabilities(loaded, decoded) -> np.ndarray:
    """P(pneumonia) of each film, in scope or not (outside scope it sits under `research`)."""
    out = []
    for a in analyse_many(decoded, loaded):
        p = a.pneumonia_probability if a.label is not None else a.research["pneumonia_probability"]
        if a.label is not None:
            assert a.label == ("PNEUMONIA" if p >= loaded.config["threshold"] else "NORMAL")
        out.append(p)
    return np.array(out)


def test_runtimes_label_val_as_keras_does(shared_data):
    paths = sorted((shared_data / "val").glob("*/*.jpeg"))
    assert len(paths) > 100
    runtimes = {name: load_model(runtime=name) for name in (KERAS, ONNX_FLOAT, ONNX_INT8)}
    threshold = runtimes[KERAS].config["threshold"]
    p = {name: [] for name in runtimes}
    for start in range(0, len(paths), CHUNK):
        decoded = [decode(path) for path in paths[start:start + CHUNK]]  # the same films for every runtime
        for name, loaded in runtimes.items():
            p[name].append(pneumonia_probabilities(loaded, decoded))
    keras_p = np.concatenate(p[KERAS])
    keras = keras_p >= threshold
    # No film sits at the cut: the float runtimes differ by about 1e-6, rounding cannot flip a label.
    assert np.abs(keras_p - threshold).min() > 1e-4
    float_labels = np.concatenate(p[ONNX_FLOAT]) >= threshold
    assert [paths[i].name for i in np.flatnonzero(float_labels != keras)] == []
    # int8 moves some probabilities by up to a few hundredths (quantisation, not rounding): a film whose
    # probability it moves across the cut may change label, within the int8 model's acceptance bound
    # (training/deploy/quantize.py: at most 0.5% of accuracy).
    int8_p = np.concatenate(p[ONNX_INT8])
    differ = np.flatnonzero((int8_p >= threshold) != keras)
    assert len(differ) <= MAX_COST * len(paths), [paths[i].name for i in differ]


def test_the_figures_shown_are_those_of_the_runtime_that_serves():
    """`pneumo info`, the model panel and every result's model show identity["metrics"]."""
    report = json.loads((BUNDLED_DIR / ONNX_REPORT).read_text())
    for name, kind in ((ONNX_INT8, "int8"), (ONNX_FLOAT, "float")):
        assert load_model(runtime=name).identity["metrics"] == report[kind]["runtime"], name
    assert load_model(runtime=KERAS).identity["metrics"] == read_config(BUNDLED_DIR)["validation"]
