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
"""

from pathlib import Path

import numpy as np


class FittedFile:
    FILE: str  # the file's name in the run folder (a class attribute, not a field)

    def save(self, path):
        values = {key: np.asarray(getattr(self, key)) for key in self.__dataclass_fields__}
        np.savez_compressed(path, **{key: value.astype(np.float64 if value.ndim == 0 else np.float32)
                                     for key, value in values.items()})

    @classmethod
    def load(cls, folder, name=None):
        """The fitted read-out in run folder `folder` (as its FILE, or `name`), or None when it has none."""
        path = Path(folder) / (name or cls.FILE)
        if not path.is_file():
            return None
        with np.load(path) as data:
            values = {key: data[key].astype(np.float64) for key in cls.__dataclass_fields__ if key in data}
        return cls(**{key: float(value) if value.ndim == 0 else value for key, value in values.items()})
