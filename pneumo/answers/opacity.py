"""Where on an adult film the opacity is: the adult trunk's maps read cell by cell.

    OpacityMap.load(folder) -> OpacityMap | None    adult_opacity.npz of a run folder
    opacity_map.heatmap(maps, lung_share) -> (N, h, w) in [0, 1]

Grad-CAM of the adult answer (pneumo/answers/adult.py) says which cells raised a
score that was trained to rank films, not to point: on the radiologists'
boxed films its peak fell inside a box on about half of them. This map is
trained to point. A linear score reads each cell of the adult trunk's
20 x 20 maps, its own channels and the mean of its 3 x 3 neighbourhood
(an opacity is wider than one cell), and a sigmoid turns it into P(this
cell lies inside a radiologist's box). training/adults/opacity.py fits it on the
lung cells of the films radiologists read, mirrored films too: the score
so that each boxed film's cells inside a box come first, the sigmoid on
all the cells; benchmarks/localisation.py measures it on patients no fit
saw.

It is read on the same maps as the adult answer, so it costs a few
thousand multiplications per cell and no second pass. It answers where,
never whether: the verdict stays the adult answer's.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from pneumo.answers.readout import LinearReadout, log_features
from pneumo.model.run_folder import ADULT_OPACITY

NEIGHBOURHOOD = 3  # cells a side of the context each cell is read with


def cell_features(maps) -> np.ndarray:
    """(N, h, w, C) maps -> (N, h, w, 2C): each cell's log maps and their mean over its neighbourhood."""
    logs = log_features(maps, np.float32)
    around = ndimage.uniform_filter(logs, size=(1, NEIGHBOURHOOD, NEIGHBOURHOOD, 1), mode="nearest")
    return np.concatenate([logs, around], axis=-1)


@dataclass
class OpacityMap(LinearReadout):
    """A linear read-out of each cell's `cell_features` (2C of them): `coef` is scaled by the sigmoid's slope."""
    FILE = ADULT_OPACITY  # in the run folder; absent: adults' heatmaps are the adult answer's Grad-CAM

    def probability(self, maps) -> np.ndarray:
        """(N, h, w, C) maps -> (N, h, w): P(the cell lies inside a radiologist's box).
        The same as sigmoid(standardised `cell_features` . coef + intercept), in a fifth of the time: the neighbourhood's
        mean and the weighted sum over channels are both linear, so the mean is taken of one
        number per cell instead of one per channel."""
        logs = log_features(maps, np.float32)
        channels = logs.shape[-1]
        weights = (self.coef / self.scale).astype(np.float32)
        own = logs @ weights[:channels]
        around = ndimage.uniform_filter(logs @ weights[channels:], size=(1, NEIGHBOURHOOD, NEIGHBOURHOOD),
                                        mode="nearest")
        logit = own + around + self.intercept - float(self.mean @ (self.coef / self.scale))
        return expit(logit)  # no overflow far from the lungs, where logits are extreme

    def heatmap(self, maps, lung_share) -> np.ndarray:
        """(N, h, w, C) maps and each cell's share of lung field (N, h, w) -> (N, h, w) in [0, 1],
        peaking at 1: the read-out learnt on lung cells only, so what it says elsewhere counts for nothing."""
        heat = self.probability(maps) * np.asarray(lung_share)
        peak = heat.max(axis=(1, 2), keepdims=True)
        return np.where(peak > 0, heat / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)
