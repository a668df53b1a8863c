"""What the film's anatomy says about it being a chest X-ray.

The segmenter (pneumo/anatomy/segmenter.py) draws the lungs and the heart.
A frontal chest film shows two lungs side by side with the heart between
their outer edges, below their tops: that is a chest X-ray, whatever the
hospital or machine, so it overrules the model-feature check
(pneumo/checks/ood.py), which only knows how the training hospitals' films
look. An image in which not one of the three is found is no chest X-ray:
a face, a page, a landscape (benchmarks/anatomy_checks.py measures both).
Lungs whitened by pneumonia may lose one lung, never all three.
"""

import numpy as np


def chest_like(anatomy) -> bool:
    """Two lungs, one on each side, and the heart between their outer edges, below their tops."""
    if anatomy is None or anatomy.right is None or anatomy.left is None or anatomy.heart is None:
        return False
    right_cols, left_cols = np.nonzero(anatomy.right)[1], np.nonzero(anatomy.left)[1]
    heart_rows, heart_cols = np.nonzero(anatomy.heart)
    lung_top = min(np.nonzero(anatomy.right)[0].min(), np.nonzero(anatomy.left)[0].min())
    return bool(right_cols.mean() < left_cols.mean()
                and right_cols.min() < heart_cols.mean() < left_cols.max()
                and heart_rows.mean() > lung_top)


def anatomy_reason(anatomy) -> str | None:
    """Why the anatomy says this is no chest X-ray (no lung, no heart), or None. None also without a segmenter."""
    if anatomy is None or any(mask is not None for mask in (anatomy.right, anatomy.left, anatomy.heart)):
        return None
    return "no lungs or heart were found where a chest X-ray shows them"
