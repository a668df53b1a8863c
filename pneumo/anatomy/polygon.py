"""A closed outline with fewer points: Douglas-Peucker, the points scikit-image's would keep.

    simplified(coords, tolerance) -> coords[kept]    (K, 2) points in, the same (L, 2) subset out

The same points, bit for bit, as `skimage.measure.approximate_polygon`
(scikit-image 0.26; tests/test_polygon.py compares the two), computed with
the same float operations in the same order, but one round of numpy for all
the chain's segments at one depth instead of one round per segment.
scikit-image's loop in Python took 2.5 ms an outline, 8 of a film's 67 ms,
this one 0.6 ms (cProfile of `analyse` on 40 val/ films, the shared 2-core
Xeon). And importing scikit-image's imports scipy.signal and scipy.stats,
0.4 to 0.9 s on the first film's path, depending on the machine's load
(docs/benchmarks.md, "Serving budget"). Which segment is split first does
not change the result: each split depends on its own two ends only.

numpy only.
"""

import numpy as np


def simplified(coords: np.ndarray, tolerance: float) -> np.ndarray:
    """The (K, 2) chain `coords` (row, col) -> the subset of its points that Douglas-Peucker keeps: no
    dropped point lies further than `tolerance` from the kept chain. First and last points always kept."""
    if tolerance <= 0:
        return coords
    coords = np.asarray(coords, np.float64)
    kept = np.zeros(len(coords), bool)
    kept[[0, -1]] = True
    starts, ends = np.array([0]), np.array([len(coords) - 1])
    while len(starts):
        inner = ends - starts > 1  # a segment without points between its ends splits no further
        starts, ends = starts[inner], ends[inner]
        if not len(starts):
            break
        points, farthest = _farthest(coords, starts, ends)
        split = farthest > tolerance
        middles = points[split]
        kept[middles] = True
        starts, ends = np.concatenate([starts[split], middles]), np.concatenate([middles, ends[split]])
    return coords[kept]


def _farthest(coords, starts, ends):
    """Per segment (start, end), its inner point farthest from the segment, first of equals, and that
    distance: the perpendicular one where the point projects inside the segment, else to the nearer end.
    The operations are scikit-image's, elementwise (so the same floats)."""
    lengths = ends - starts - 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    segment = np.repeat(np.arange(len(starts)), lengths)
    index = np.arange(lengths.sum()) - offsets[segment] + starts[segment] + 1
    r0, c0 = coords[starts, 0], coords[starts, 1]
    r1, c1 = coords[ends, 0], coords[ends, 1]
    dr, dc = r1 - r0, c1 - c0
    angle = -np.arctan2(dr, dc)
    sin, cos = np.sin(angle), np.cos(angle)
    along = c0 * sin + r0 * cos
    r, c = coords[index, 0], coords[index, 1]
    dr0, dc0 = r - r0[segment], c - c0[segment]
    dr1, dc1 = r - r1[segment], c - c1[segment]
    dr_, dc_ = dr[segment], dc[segment]
    perpendicular = (dr0 * dr_ + dc0 * dc_ > 0) & (-dr1 * dr_ - dc1 * dc_ > 0)
    distance = np.where(perpendicular,
                        np.abs(r * cos[segment] + c * sin[segment] - along[segment]),
                        np.minimum(np.sqrt(dc0 ** 2 + dr0 ** 2), np.sqrt(dc1 ** 2 + dr1 ** 2)))
    farthest = np.maximum.reduceat(distance, offsets)
    first = np.minimum.reduceat(np.where(distance == farthest[segment], np.arange(len(index)), len(index)), offsets)
    return index[first], farthest
