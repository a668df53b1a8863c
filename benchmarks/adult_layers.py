"""Which features can answer for adults? A linear read-out of several VGG16 layers, on adults'
radiologist readings, pooled over the whole film and over the lung fields.

    python benchmarks/adult_layers.py [--adult-data ../shared/data/adult_cxr] [--seeds 3] [--limit N]

For each (weights, layer, input size) below, every adult film of labels.csv
goes through the network once (Keras, as it is, no variants); each map's
mean and maximum over the film, and over its lung fields (pneumo/answers/adult.py
`adult_features` with `lung_weights`), feed the adult answer's logistic
regression (training/adults/answer.py: log features, standardised, balanced, C) fitted
on `Lung Opacity` against `Normal`. Five folds by patient, each film scored by
a regression fitted without its patient, repeated over --seeds fold draws.

Printed: ROC AUC for opacity against normal, against every film read without
opacity, within AP and within PA films; then sensitivity and specificity at a
threshold from an inner cross-validation of each training part (aiming at
training/adults/answer.py's SENSITIVITY_TARGET), the way the shipping rule reads them.

Weights: the bundled model ("bundled"; its blocks 1-3 are HED's, frozen in
training, its blocks 4-5 learnt on children at 128 px) and the
ImageNet-derived HED VGG16 ("hed", training/children/pretrained.py). About 20 minutes
on 2 cores.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402

from pneumo.answers.adult import adult_features, lung_weights  # noqa: E402
from pneumo.model.loading import BUNDLED_DIR  # noqa: E402
from pneumo.anatomy.location import assumed_fields  # noqa: E402
from pneumo.anatomy.lungs import lung_fields  # noqa: E402
from pneumo.model.preprocess import preprocess  # noqa: E402
from pneumo.model.run_folder import KERAS_MODEL  # noqa: E402
from training.adults import answer as adult  # noqa: E402
from training.children.pretrained import hed_layers  # noqa: E402

# (weights, input size, layers): one pass per (weights, size).
PASSES = (("bundled", 128, ("block5_conv3",)),
          ("bundled", 224, ("block3_pool", "block4_pool", "block5_conv3")),
          ("hed", 224, ("block4_pool",)))


def network(weights, size):
    """VGG16's convolutions at `size` px with the named weights."""
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    if weights == "hed":
        for name, (kernel, bias) in hed_layers().items():
            base.get_layer(name).set_weights([kernel, bias])
    else:
        bundled = keras.saving.load_model(BUNDLED_DIR / KERAS_MODEL, compile=False)
        for layer in base.layers:
            if layer.weights:
                layer.set_weights(bundled.get_layer(layer.name).get_weights())
    return base


def features(films, fields, weights, size, layers, batch_size=16):
    """{layer: (whole-film features, lung features)} of every film."""
    base = network(weights, size)
    probe = keras.Model(base.inputs, [base.get_layer(name).output for name in layers])
    out = {name: ([], []) for name in layers}
    for start in range(0, len(films), batch_size):
        batch = np.concatenate([preprocess(film, size) for film in films[start:start + batch_size]])
        maps = probe.predict_on_batch(batch)
        for name, layer_maps in zip(layers, maps if len(layers) > 1 else [maps]):
            layer_maps = np.asarray(layer_maps, np.float32)
            grid = layer_maps.shape[1:3]
            lungs = np.stack([lung_weights(f, grid) for f in fields[start:start + batch_size]])
            out[name][0].append(adult_features(layer_maps))
            out[name][1].append(adult_features(layer_maps, lungs))
    return {name: (np.concatenate(film), np.concatenate(lung)) for name, (film, lung) in out.items()}


def regression(x, y):
    """training/adults/answer.py's read-out: log features, standardised, balanced logistic regression."""
    x = np.log1p(np.maximum(x, 0.0))
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=adult.C, class_weight="balanced", max_iter=3000).fit((x - mean) / scale, y)
    return lambda z: model.decision_function((np.log1p(np.maximum(z, 0.0)) - mean) / scale)


def folds(rows, strata, groups, seed):
    return StratifiedGroupKFold(adult.FOLDS, shuffle=True, random_state=seed).split(rows, strata[rows], groups[rows])


def cross_validated(x, reading, groups, seed):
    """Out-of-fold scores of every read film, and whether each is called opacity at a threshold
    from the inner folds of its training part."""
    read = np.flatnonzero(reading != "")
    opacity = (reading == adult.OPACITY).astype(int)
    score, called = np.full(len(x), np.nan), np.zeros(len(x), bool)
    for fit_part, held in folds(read, reading, groups, seed):
        train = read[fit_part][np.isin(reading[read[fit_part]], (adult.OPACITY, adult.NORMAL))]
        inner = np.empty(len(train))
        for inner_fit, inner_held in folds(np.arange(len(train)), reading[train], groups[train], seed):
            inner[inner_held] = regression(x[train[inner_fit]], opacity[train[inner_fit]])(x[train[inner_held]])
        positives = np.sort(inner[opacity[train] == 1])
        cut = positives[len(positives) - int(np.ceil(adult.SENSITIVITY_TARGET * len(positives)))]
        score[read[held]] = regression(x[train], opacity[train])(x[read[held]])
        called[read[held]] = score[read[held]] >= cut
    return score, called


def figures(x, reading, projection, groups, seeds):
    rows = []
    for seed in range(seeds):
        score, called = cross_validated(x, reading, groups, seed)
        read, opacity = reading != "", reading == adult.OPACITY
        pair = np.isin(reading, (adult.OPACITY, adult.NORMAL))
        within = [roc_auc_score(opacity[pair & (projection == v)], score[pair & (projection == v)])
                  for v in ("AP", "PA")]
        rows.append([roc_auc_score(opacity[pair], score[pair]), roc_auc_score(opacity[read], score[read]), *within,
                     called[opacity].mean(), (~called[reading == adult.NORMAL]).mean()])
    return np.mean(rows, axis=0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adult-data", default=str(ROOT.parent / "shared" / "data" / "adult_cxr"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="only the first N films (a quick check)")
    args = p.parse_args()
    labels = adult.read_labels(args.adult_data)
    names = sorted(labels)[:args.limit]
    reading = np.array([labels[n]["rsna_class"] for n in names])
    projection = np.array([labels[n]["view"] for n in names])
    groups = np.array([labels[n]["patient"] for n in names])
    films = [Image.open(Path(args.adult_data) / n).convert("L") for n in names]
    own = [lung_fields(film) for film in films]
    fields = [found or assumed_fields() for found in own]
    print(f"{(reading == adult.OPACITY).sum()} Lung Opacity, {(reading == adult.NORMAL).sum()} Normal, "
          f"{(reading == adult.OTHER).sum()} read without opacity; {sum(f is not None for f in own)} of {len(films)} "
          f"films with their own lung fields; {args.seeds} draws of {adult.FOLDS} folds by patient\n")
    print("| weights | layer | input | pooled over | ROC AUC (opacity vs normal) | ROC AUC (vs all read) | "
          "within AP | within PA | sensitivity | specificity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for weights, size, layers in PASSES:
        for layer, (film, lung) in features(films, fields, weights, size, layers).items():
            for pooled, x in (("the film", film), ("the lungs", lung)):
                cells = " | ".join(f"{v:.3f}" for v in figures(x, reading, projection, groups, args.seeds))
                print(f"| {weights} | {layer} | {size} px | {pooled} | {cells} |", flush=True)
    opacity, pair = reading == adult.OPACITY, np.isin(reading, (adult.OPACITY, adult.NORMAL))
    print(f"\nThe projection alone (AP above PA), opacity vs normal: ROC AUC "
          f"{roc_auc_score(opacity[pair], projection[pair] == 'AP'):.3f}")


if __name__ == "__main__":
    main()
