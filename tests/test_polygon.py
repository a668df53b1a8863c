"""The outlines' own simplification and hole filling (pneumo/anatomy/polygon.py, pneumo/anatomy/segmenter.py)
give what scikit-image's approximate_polygon and scipy's binary_fill_holes give, bit for bit: they replace them
only to be quicker (docs/benchmarks.md, "Serving budget"), so every outline stays the same."""

import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import require_import

from pneumo.anatomy.polygon import simplified
from pneumo.anatomy.segmenter import _filled


def blobs(count, size=96, seed=0):
    """Smooth random masks: several blobs, holes, bays, touching the edge or not."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield ndimage.gaussian_filter(rng.random((size, size)), rng.uniform(1.5, 8)) > rng.uniform(0.45, 0.55)


def test_the_same_points_as_scikit_images_douglas_peucker():
    measure = require_import("skimage.measure")
    cases = 0
    for mask in blobs(60):
        soft = ndimage.gaussian_filter(np.pad(mask.astype(np.float32), 3), 1.0)
        for contour in measure.find_contours(soft, 0.5):
            for chain in (contour, np.vstack([contour[:-1:3], contour[:1]])):  # as pneumo's outlines thin it
                for tolerance in (0.0, 0.5, 0.65, 1.1, 3.0):
                    expected = measure.approximate_polygon(chain, tolerance)
                    assert np.array_equal(simplified(chain, tolerance), expected), (len(chain), tolerance)
                    cases += 1
    assert cases > 500


@pytest.mark.parametrize("chain", [np.array([[1.0, 2.0]]), np.array([[0.0, 0.0], [3.0, 4.0]]),
                                   np.array([[0.0, 0.0], [0.0, 4.0], [4.0, 4.0], [0.0, 0.0]])])
def test_short_and_degenerate_chains(chain):
    measure = require_import("skimage.measure")
    assert np.array_equal(simplified(chain, 0.5), measure.approximate_polygon(chain, 0.5))


def test_holes_filled_as_scipy_fills_them():
    for mask in blobs(300, size=64, seed=1):
        assert np.array_equal(_filled(mask), ndimage.binary_fill_holes(mask))
