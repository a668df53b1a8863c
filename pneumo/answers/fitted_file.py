"""A fitted read-out kept in its run folder as one .npz: an array per dataclass field.

    @dataclass
    class Check(FittedFile):
        FILE = "check.npz"  # its name in the run folder (pneumo/model/run_folder.py)
        coef: np.ndarray
        threshold: float

    check.save(path); Check.load(run_folder) -> Check | None

Arrays are saved as float32 (a few KB each), numbers (thresholds, intercepts) as float64:
a threshold is a fitted cut between two observed probabilities, and float32 could move
it past one of them. Loaded as float64, 0-d arrays as floats.
A field missing from an older file keeps its default.

A fit chooses its threshold on the probabilities that serving will compute: `as_saved()`
is the read-out as load() will give it back (its arrays rounded to float32), and
training/readout.py returns every fitted read-out so.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np


def _stored(value) -> np.ndarray:
    """A field as the file stores it: 0-d as float64, arrays as float32."""
    value = np.asarray(value)
    return value.astype(np.float64 if value.ndim == 0 else np.float32)


def _loaded(value: np.ndarray):
    """A stored field as load() returns it: float64, 0-d as a float."""
    value = value.astype(np.float64)
    return float(value) if value.ndim == 0 else value


class FittedFile:
    FILE: str  # the file's name in the run folder (a class attribute, not a field)

    def save(self, path):
        np.savez_compressed(path, **{key: _stored(getattr(self, key)) for key in self.__dataclass_fields__})

    def as_saved(self):
        """A copy that computes exactly what this read-out will compute once saved and loaded."""
        return replace(self, **{key: _loaded(_stored(getattr(self, key))) for key in self.__dataclass_fields__})

    @classmethod
    def load(cls, folder, name=None):
        """The fitted read-out in run folder `folder` (as its FILE, or `name`), or None when it has none."""
        path = Path(folder) / (name or cls.FILE)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return cls(**{key: _loaded(data[key]) for key in cls.__dataclass_fields__ if key in data})
