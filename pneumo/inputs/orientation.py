"""Is the film upside down, on its side, or in inverted grey levels? Turn it back.

Phone photos, scanners and DICOM exports (MONOCHROME1 shown as MONOCHROME2
by another program) give films turned by 90, 180 or 270 degrees, or with
bone black. The model learnt from upright films with bone white; on an
altered film it still answers, often wrongly.

The check is cheap and runs before the model: a multinomial logistic
regression on a 32 x 32 thumbnail of the film (standardised per image, as
the model's input is) gives the probability of each of the 8 ways a film
can come (4 turns x 2 polarities). training/checks/orientation.py fits it on
children's and adults' films in all 8 ways and saves it as orientation.npz
in the run folder. When the check is sure (at least its saved threshold)
that a film is altered, the film is turned back before the model sees it,
and a note says so; otherwise the film goes on as it came.

Serving needs only numpy and Pillow.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pneumo.model.run_folder import ORIENTATION as FILE

SIDE = 32  # the thumbnail's side: the layout of a chest, not its detail
TURNS = (0, 90, 180, 270)  # degrees the film was turned, counter-clockwise
# The 8 ways a film can come, in the order of the check's classes: (turn, inverted); 0 is upright.
WAYS = tuple((turn, inverted) for inverted in (False, True) for turn in TURNS)
UPRIGHT = 0
TURN_WORDS = {90: "on its side", 180: "upside down", 270: "on its side"}


@dataclass
class OrientationCheck:
    coef: np.ndarray  # (8, SIDE * SIDE) logistic-regression weights, one row per way in WAYS
    intercept: np.ndarray  # (8,)
    threshold: float  # P(the most likely altered way) at or above it: turn the film back

    def probabilities(self, thumbnails) -> np.ndarray:
        """(N, SIDE * SIDE) thumbnails -> (N, 8) P(each way in WAYS)."""
        logits = np.asarray(thumbnails, np.float64) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def way_of(self, image: Image.Image) -> int:
        """The index in WAYS of how `image` came: UPRIGHT unless the check is sure of another."""
        p = self.probabilities(thumbnail(image)[None])[0]
        way = int(np.argmax(p))
        return way if way != UPRIGHT and p[way] >= self.threshold else UPRIGHT

    def save(self, path):
        np.savez_compressed(path, coef=np.float32(self.coef), intercept=np.float32(self.intercept),
                            threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, folder) -> "OrientationCheck | None":
        path = Path(folder) / FILE
        if not path.is_file():
            return None  # a run folder without the check: films are taken as they come
        with np.load(path) as data:
            return cls(data["coef"].astype(np.float64), data["intercept"].astype(np.float64),
                       float(data["threshold"]))


def thumbnail(image: Image.Image) -> np.ndarray:
    """A film -> (SIDE * SIDE,) float32: greyscale, squashed like the model's input, mean 0 and spread 1."""
    pixels = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX), np.float32)
    return ((pixels - pixels.mean()) / (pixels.std() + 1e-6)).ravel()


def altered(image: Image.Image, way: int) -> Image.Image:
    """`image` as it would come the `way`-th way of WAYS (for fitting and measuring the check)."""
    turn, inverted = WAYS[way]
    grey = image.convert("L")
    turned = grey.rotate(turn, expand=True) if turn else grey
    return ImageOps.invert(turned) if inverted else turned


def restored(image: Image.Image, way: int) -> Image.Image:
    """Undo `altered(..., way)`."""
    turn, inverted = WAYS[way]
    grey = image.convert("L")
    grey = ImageOps.invert(grey) if inverted else grey
    return grey.rotate(-turn % 360, expand=True) if turn else grey


def note(way: int) -> str:
    """The warning a film turned back carries, e.g. "The film was upside down; it was turned before analysis." """
    turn, inverted = WAYS[way]
    found, done = [], []
    if turn:
        found.append(f"was {TURN_WORDS[turn]}")
        done.append("turned")
    if inverted:
        found.append("had its grey levels inverted")
        done.append("inverted back")
    return f"The film {' and '.join(found)}; it was {' and '.join(done)} before analysis."


def upright(film, check: "OrientationCheck | None"):
    """A pneumo.inputs.photo.Film -> the same film, turned back (with a note) when the check is sure it came altered."""
    if check is None or film.image.mode != "L":  # a colourful image is no film: the scope check refuses it
        return film
    way = check.way_of(film.image)
    if way == UPRIGHT:
        return film
    return replace(film, image=restored(film.image, way), warnings=[*film.warnings, note(way)], turned=WAYS[way][0])
