"""Where the model found its evidence for pneumonia, without gradients.

The head is global average pooling -> (dropout) -> dense -> softmax, so the
gradient of the log-odds of pneumonia with respect to the last convolution's
maps is the same at every position: the dense kernel times d(log-odds)/d(logits),
divided by the number of positions (a max-pooling before the average only
moves each window's gradient to its maximum, which leaves the spatial mean
unchanged). Grad-CAM's channel weights are that spatial mean, so the maps,
the probabilities and the kernel give the same heatmap that TensorFlow's
GradientTape did (tests/test_heatmap.py), from any runtime, in numpy.

    heatmaps(maps, probabilities, head_kernel) -> (N, h, w) in [0, 1]

Drawing a heatmap over its film for people is pneumo/overlay.py's.
"""

import numpy as np

from pneumo.answers.classes import BACTERIAL, NORMAL, VIRAL

# Inside the logarithms, as in the Grad-CAM this replaces: a probability of
# exactly 0 must not give an infinite gradient.
EPSILON = 1e-7

def log_odds_gradient(probabilities) -> np.ndarray:
    """(N, 3) softmax outputs -> (N, 3) d/d(logits) of log(P(bact.) + P(viral) + eps) - log(P(normal) + eps).

    Log-odds rather than a probability: near 1 a probability saturates and
    its gradient vanishes, so confident cases would get no map."""
    p = np.asarray(probabilities, np.float64)
    sick = p[:, BACTERIAL] + p[:, VIRAL]
    is_sick = np.zeros(p.shape[1])
    is_sick[[BACTERIAL, VIRAL]] = 1.0
    is_normal = np.zeros(p.shape[1])
    is_normal[NORMAL] = 1.0
    # d p_j / d z_k = p_j (delta_jk - p_k), summed over the classes inside each logarithm.
    d_sick = p * is_sick - sick[:, None] * p
    d_normal = p * is_normal - p[:, [NORMAL]] * p
    return d_sick / (sick[:, None] + EPSILON) - d_normal / (p[:, [NORMAL]] + EPSILON)


def channel_weights(probabilities, head_kernel, positions) -> np.ndarray:
    """Grad-CAM's weights (N, C): the gradient of the log-odds on each map, averaged over its `positions`."""
    return log_odds_gradient(probabilities) @ np.asarray(head_kernel, np.float64).T / positions


def heatmaps(maps, probabilities, head_kernel) -> np.ndarray:
    """The last convolution's maps (N, h, w, C), the softmax outputs (N, 3) and
    the dense head's kernel (C, 3) -> float32 heatmaps (N, h, w), each scaled to peak at 1."""
    maps = np.asarray(maps, np.float64)
    return class_activation(maps, channel_weights(probabilities, head_kernel, maps.shape[1] * maps.shape[2]))


def class_activation(maps, weights) -> np.ndarray:
    """Maps (N, h, w, C) and Grad-CAM channel weights (N, C) -> float32 heatmaps (N, h, w), each peaking at 1."""
    cam = np.maximum(np.einsum("nhwc,nc->nhw", np.asarray(maps, np.float64), weights), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    # An all-zero map (nothing raised the odds) stays zero instead of dividing by 0.
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)
