"""The bundled lung-and-heart segmenter (pneumo/anatomy/segmenter.py, pneumo/bundled_model/anatomy.onnx)
on the JSRT films it held out in training (anatomy.json's `held_out`), and on things that are not films.

Needs ../shared/data/lung_masks: skips without it, fails under CI=true."""

import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from tests.conftest import ROOT, SHARED_DATA, require, require_import  # noqa: E402

LUNG_MASKS = SHARED_DATA.parent / "lung_masks"
BUNDLED = ROOT / "pneumo" / "bundled_model"
MIN_LUNG_DICE = 0.93

require(LUNG_MASKS.is_dir(), f"JSRT films with lung masks not found at {LUNG_MASKS}")
require((BUNDLED / "anatomy.onnx").is_file(), f"no {BUNDLED / 'anatomy.onnx'}")
require_import("skimage")  # the outlines

from pneumo.anatomy.segmenter import Segmenter, anatomy_of, outline_of  # noqa: E402


@pytest.fixture(scope="module")
def segmenter():
    loaded = Segmenter.load(BUNDLED)
    assert loaded is not None
    return loaded


@pytest.fixture(scope="module")
def held_out():
    names = json.loads((BUNDLED / "anatomy.json").read_text())["held_out"]
    assert 40 <= len(names) <= 60, len(names)
    films = []
    for name in names:
        with Image.open(LUNG_MASKS / "images" / name) as image:
            image.load()
            films.append(image.copy())
    return names, films


@pytest.fixture(scope="module")
def anatomies(segmenter, held_out):
    films = held_out[1]
    return [a for start in range(0, len(films), 16) for a in segmenter.segment(films[start:start + 16])]


def _truth(name, size):
    with Image.open(LUNG_MASKS / "masks" / name) as mask:
        return np.asarray(mask.resize((size, size), Image.NEAREST))


def _dice(a, b):
    a = np.zeros(b.shape, bool) if a is None else a
    total = a.sum() + b.sum()
    return 2 * (a & b).sum() / total if total else 1.0


def _centre_x(polygon):
    return float(np.mean(np.asarray(polygon)[:-1, 0]))


def test_held_out_dice(segmenter, held_out, anatomies, record_property):
    names = held_out[0]
    scores = {"right": [], "left": [], "heart": []}
    for name, anatomy in zip(names, anatomies):
        truth = _truth(name, segmenter.size)
        for k, key in enumerate(scores, start=1):
            scores[key].append(_dice(getattr(anatomy, key), truth == k))
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    for k, v in means.items():
        record_property(f"dice_{k}", round(v, 4))
    print(f"held-out Dice on {len(names)} JSRT films: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
    assert means["right"] >= MIN_LUNG_DICE, means
    assert means["left"] >= MIN_LUNG_DICE, means


def test_outlines_are_closed_polygons_on_the_right_sides(anatomies):
    for anatomy in anatomies:
        outlines = anatomy.outlines()
        assert set(outlines) == {"right", "left", "heart"}
        for name in ("right", "left"):
            polygon = outlines[name]
            assert polygon is not None, name
            assert 4 <= len(polygon) <= 61 and polygon[0] == polygon[-1]
            xy = np.asarray(polygon)
            assert xy.min() >= 0 and xy.max() <= 1
        assert _centre_x(outlines["right"]) < 0.5 < _centre_x(outlines["left"])


def test_a_mirrored_film_swaps_the_lungs(segmenter, held_out):
    film = held_out[1][0]
    plain, mirrored = segmenter.segment([film, ImageOps.mirror(film)])
    assert mirrored.right is not None and mirrored.left is not None
    assert _dice(mirrored.right, plain.left[:, ::-1]) > 0.9
    assert _dice(mirrored.left, plain.right[:, ::-1]) > 0.9


def test_modes_and_sizes_give_the_same_lungs(segmenter, held_out):
    film = held_out[1][1]
    grey, rgb, wide = segmenter.segment([film, film.convert("RGB"), film.resize((700, 500))])
    assert _dice(grey.right, rgb.right) > 0.98 and _dice(grey.left, rgb.left) > 0.98
    assert wide.right is not None and wide.left is not None


def test_no_lungs_in_flat_grey_or_noise(segmenter):
    rng = np.random.default_rng(0)
    pictures = [Image.new("L", (320, 256), 128), Image.new("RGB", (256, 256), (30, 30, 30)),
                Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)),
                Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))]
    for anatomy in segmenter.segment(pictures):
        assert anatomy.right is None and anatomy.left is None, "lungs found where there are none"


def test_empty_batch_and_probabilities(segmenter, anatomies):
    assert segmenter.segment([]) == []
    p = anatomies[0].probabilities
    assert p.shape == (4, segmenter.size, segmenter.size)
    assert np.allclose(p.sum(axis=0), 1, atol=1e-3)


def test_outline_of_a_square_is_smooth_and_closed():
    mask = np.zeros((64, 64), bool)
    mask[16:48, 8:40] = True
    polygon = outline_of(mask, max_points=60)
    xy = np.asarray(polygon)
    assert polygon[0] == polygon[-1] and len(polygon) <= 60
    # the outline runs along the mask's edge: pixel i spans [i, i + 1) / 64
    assert abs(xy[:, 0].min() - 8 / 64) < 0.01 and abs(xy[:, 0].max() - 40 / 64) < 0.01
    assert abs(xy[:, 1].min() - 16 / 64) < 0.01 and abs(xy[:, 1].max() - 48 / 64) < 0.01


def test_absent_model_loads_as_none(tmp_path):
    assert Segmenter.load(tmp_path) is None


def test_sides_follow_the_image_when_one_lung_is_found():
    size = 32
    p = np.zeros((4, size, size), np.float32)
    p[0] = 1
    p[:, 8:24, 20:28] = 0
    p[1, 8:24, 20:28] = 1  # labelled the right lung, but on the image's right, no other lung
    anatomy = anatomy_of(p)
    assert anatomy.right is None and anatomy.left is not None
