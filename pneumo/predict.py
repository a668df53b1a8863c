"""The model's raw outputs for a batch of model inputs, from one forward pass.

    model_outputs(loaded, inputs, with_heatmap) -> ModelOutputs

The runtime (pneumo/runtime.py: ONNX int8, ONNX float or Keras) gives the
probabilities and the last convolution's maps; the features of the scope
checks and of the adult answer, and the heatmaps, are computed from the maps
in numpy (pneumo/heatmap.py), so every runtime yields all of them from the
same pass. Everything after this (the scope checks, calibration, the
verdict) is pneumo/analysis.py's; everything before it (decoding,
preprocessing) too.
"""

from dataclasses import dataclass

import numpy as np

from .adult import adult_features, lung_weights
from .heatmap import class_activation, heatmaps

GRID = 4  # the population check's features: 4 x 4 cells (2 x 2 maps each at 128 px)


@dataclass
class ModelOutputs:
    raw: np.ndarray  # (N, 3) uncalibrated probabilities, in CLASSES order
    pooled: np.ndarray | None  # (N, channels) the heatmap layer's maps averaged over space; None if not computed
    heatmaps: np.ndarray | None  # (N, h, w) in [0, 1], or None when not asked for
    # (N, GRID * GRID * channels) the maps averaged over each cell of a GRID x GRID grid,
    # row by row: where things are (proportions), which the population check needs.
    regions: np.ndarray | None = None
    # (N, 2 * channels) the maps' mean and maximum per channel over the film, and over the
    # lung fields when they were given: the adult answer's features (pneumo/adult.py)
    adult: np.ndarray | None = None
    adult_lungs: np.ndarray | None = None
    adult_heatmaps: np.ndarray | None = None  # (N, h, w): where the adult answer's evidence is, when asked for


def model_outputs(loaded, inputs, with_heatmap=False, lungs=None) -> ModelOutputs:
    """Model inputs (N, H, W, 3) -> probabilities, pooled features and, if asked, heatmaps.
    lungs: each film's pneumo.lungs.LungFields, for the adult answer's features over the lungs."""
    runtime = loaded.runtime
    raw, maps = runtime(inputs)
    pooled = maps.mean(axis=(1, 2))  # the not-a-chest-X-ray check's features (pneumo/ood.py)
    heat = heatmaps(maps, raw, runtime.head_kernel) if with_heatmap else None
    weights = np.stack([lung_weights(fields, maps.shape[1:3]) for fields in lungs]) if lungs else None
    adult = loaded.adult_head
    adult_heat = None
    if with_heatmap and adult:
        adult_heat = class_activation(maps, adult.channel_weights(maps, weights if adult.lungs else None))
    return ModelOutputs(np.asarray(raw), pooled, heat, regions(maps), adult_features(maps),
                        adult_features(maps, weights) if lungs else None, adult_heat)


def regions(maps, cells=GRID) -> np.ndarray:
    """(N, h, w, C) -> (N, cells * cells * C): the mean of each grid cell, row by row.
    Cells overlap by a row or column when the maps do not divide evenly (or are smaller)."""
    def spans(size):
        edges = np.linspace(0, size, cells + 1)
        return [(int(np.floor(a)), max(int(np.floor(a)) + 1, int(np.ceil(b)))) for a, b in zip(edges, edges[1:])]

    return np.concatenate([maps[:, r0:r1, c0:c1].mean(axis=(1, 2))
                           for r0, r1 in spans(maps.shape[1]) for c0, c1 in spans(maps.shape[2])], axis=1)
