"""Weight averaging of the best few epochs: one model whose figures depend
less on which epoch, seed and threshold happened to win.

Every epoch that ranks among the `k` best selection scores keeps its weights
as CHECKPOINT_DIR/epochNNN.weights.h5; the others' files are deleted. The run
folder's model is then the element-wise mean of those weights (VGG16 has no
batch statistics to recompute). Fine-tuning from one start keeps the epochs
in one basin, where their average scores like, or better than, each of them.
"""

from pathlib import Path

import numpy as np


def weights_file(checkpoint_dir, epoch) -> Path:
    return Path(checkpoint_dir) / f"epoch{epoch:03d}.weights.h5"


def update_top(top, epoch, score, k):
    """`top` is [[score, epoch], ...], best first. Returns (new top, epochs
    that dropped out). Ties keep the earlier epoch."""
    ranked = sorted([*top, [score, epoch]], key=lambda row: (-row[0], row[1]))
    return ranked[:k], [e for _, e in ranked[k:]]


def keep_epoch(model, checkpoint_dir, state, epoch, score, k):
    """Save this epoch's weights if it ranks among the `k` best; forget the loser."""
    top, dropped = update_top(state.get("top_epochs", []), epoch, score, k)
    state["top_epochs"] = top
    if epoch not in dropped:
        model.save_weights(weights_file(checkpoint_dir, epoch))
    for old in dropped:
        weights_file(checkpoint_dir, old).unlink(missing_ok=True)


def average_into(model, checkpoint_dir, epochs):
    """Load the mean of the saved epochs' weights into `model` (same architecture).
    Non-float state (a dropout layer's seed) is taken from the first epoch."""
    saved = []
    for epoch in epochs:
        model.load_weights(weights_file(checkpoint_dir, epoch))
        saved.append(model.get_weights())
    model.set_weights([_mean(arrays) for arrays in zip(*saved)])
    return model


def _mean(arrays):
    first = arrays[0]
    if not np.issubdtype(first.dtype, np.floating):
        return first
    return np.mean(np.stack(arrays).astype(np.float64), axis=0).astype(first.dtype)
