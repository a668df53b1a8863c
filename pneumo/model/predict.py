"""The model's raw outputs for a batch of model inputs, from one forward pass.

    model_outputs(loaded, inputs, with_heatmap) -> ModelOutputs
    adult_outputs(loaded, images, maps, with_heatmap, shared) -> AdultOutputs

The runtime (pneumo/model/runtime.py: ONNX int8, ONNX float or Keras) gives the
probabilities and the last convolution's maps; the features of the scope
checks and the heatmaps are computed from the maps in numpy
(pneumo/model/heatmap.py), so every runtime yields all of them from the same pass.
Films the population check sends to adults get the adult answer's features:
from the same maps, or, for a head with its own trunk, from that trunk's maps
(pneumo/answers/adult.py says why): a branch continues the same pass from its
shared maps (pneumo/model/one_pass.py), a whole trunk makes a second pass of
its own. Their heatmap is the opacity
map of those maps (pneumo/answers/opacity.py) when the run folder has one.
Everything after this (the scope checks, calibration, the verdict) is
pneumo/analysis.py's; everything before it (decoding, preprocessing) too.
"""

from dataclasses import dataclass

import numpy as np

from pneumo.answers.adult import adult_features, lung_weights
from pneumo.model.heatmap import class_activation, heatmaps
from pneumo.anatomy.location import lungs_or_assumed
from pneumo.model.preprocess import preprocess

GRID = 4  # the population check's features: 4 x 4 cells (2 x 2 maps each at 128 px)


@dataclass
class ModelOutputs:
    raw: np.ndarray  # (N, 3) uncalibrated probabilities, in CLASSES order
    pooled: np.ndarray | None  # (N, channels) the heatmap layer's maps averaged over space; None if not computed
    heatmaps: np.ndarray | None  # (N, h, w) in [0, 1], or None when not asked for
    # (N, GRID * GRID * channels) the maps averaged over each cell of a GRID x GRID grid,
    # row by row: where things are (proportions), which the population check needs.
    regions: np.ndarray | None = None
    maps: np.ndarray | None = None  # (N, h, w, channels) the heatmap layer's maps themselves
    shared: np.ndarray | None = None  # (N, h', w', C') the maps an adult branch continues from; None without


@dataclass
class AdultOutputs:
    features: np.ndarray  # (N, 2 C) what the adult answer reads (pneumo/answers/adult.py)
    heatmaps: np.ndarray | None  # (N, h, w) in [0, 1]: where its evidence is; None when not asked for
    lungs: list | None  # each film's lung fields (pneumo.anatomy.lungs.LungFields) when the head pools over them


def model_outputs(loaded, inputs, with_heatmap=False) -> ModelOutputs:
    """Model inputs (N, H, W, 3) -> probabilities, pooled features and, if asked, heatmaps."""
    runtime = loaded.runtime
    raw, maps, shared = runtime.run(inputs)
    pooled = maps.mean(axis=(1, 2))  # the not-a-chest-X-ray check's features (pneumo/checks/ood.py)
    heat = heatmaps(maps, raw, runtime.head_kernel) if with_heatmap else None
    return ModelOutputs(np.asarray(raw), pooled, heat, regions(maps), maps, shared)


def adult_outputs(loaded, images, maps, with_heatmap=False, shared=None) -> AdultOutputs:
    """The adult answer's features of films the population check sent to it (PIL images, as the
    children's model saw them, `maps`, that model's maps of them, and `shared`, its shared maps). A head
    with its own trunk (adult_trunk.int8.onnx) reads that network's maps instead: a branch continues
    the pass from `shared`, a whole trunk makes a second pass, adults only. It pools over the lung
    fields it was fitted on: the brightness profiles' (pneumo/answers/adult.py says why)."""
    head = loaded.adult_head
    if head.trunk:
        maps = trunk_maps(loaded.adult_trunk, images, shared)
    lungs = [lungs_or_assumed(image) for image in images] if head.lungs else None
    weights = lung_grid(lungs, maps) if lungs else None
    heat = None
    if with_heatmap:
        heat = adult_heatmaps(head, maps, weights, loaded.opacity_map, lungs)
    return AdultOutputs(adult_features(maps, weights), heat, lungs)


def adult_heatmaps(head, maps, weights, opacity=None, lungs=None) -> np.ndarray:
    """Where on each adult film the evidence is (N, h, w): the opacity map (pneumo/answers/opacity.py), read
    on the lung fields `lungs`, when the run folder has one; else Grad-CAM of the adult read-out, on
    the maps weighed cell by cell by `weights` (N, h, w: each cell's share of aerated lung, what the
    read-out pools over; None: the film). A head that pools over the lungs never reads the rest of
    the film (labels, markers, the shoulders): its evidence there is nil. Weighed by the whole lung
    fields instead, Grad-CAM's peaks went to the diaphragm and the heart's edge: 29% fell in a
    radiologist's box, against 49% (benchmarks/localisation.py)."""
    if opacity is not None and lungs is not None:
        return opacity.heatmap(maps, lung_grid(lungs, maps, aerated=False))
    seen = maps if weights is None else maps * weights[..., None]
    return class_activation(seen, head.channel_weights(maps, weights))


def trunk_maps(trunk, images, shared=None) -> np.ndarray:
    """PIL images -> the adult trunk's maps (N, h, w, C), each image preprocessed at the trunk's size;
    a branch given the children's pass's `shared` maps of them continues from those instead."""
    if shared is not None and getattr(trunk, "continues", False):
        return trunk.from_shared(shared)
    return trunk(np.concatenate([preprocess(image, trunk.image_size) for image in images]))


def lung_grid(lungs, maps, aerated=True) -> np.ndarray:
    """Each film's lung fields -> (N, h, w): the share of aerated lung (or, aerated=False, of the
    whole fields) in each cell of the maps' grid (pneumo/answers/adult.py `lung_weights`)."""
    return np.stack([lung_weights(fields, maps.shape[1:3], aerated) for fields in lungs])


def regions(maps, cells=GRID) -> np.ndarray:
    """(N, h, w, C) -> (N, cells * cells * C): the mean of each grid cell, row by row.
    Cells overlap by a row or column when the maps do not divide evenly (or are smaller)."""
    def spans(size):
        edges = np.linspace(0, size, cells + 1)
        return [(int(np.floor(a)), max(int(np.floor(a)) + 1, int(np.ceil(b)))) for a, b in zip(edges, edges[1:])]

    return np.concatenate([maps[:, r0:r1, c0:c1].mean(axis=(1, 2))
                           for r0, r1 in spans(maps.shape[1]) for c0, c1 in spans(maps.shape[2])], axis=1)
