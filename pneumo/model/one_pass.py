"""One pass for both answers: the adult trunk continues the children's model's own pass.

The children's model keeps VGG16's first three blocks frozen at their
pretrained weights, and the adult trunk (training/adults/trunk.py) is the same
pretrained VGG16 up to block4_conv2. At one input size, their first three
blocks compute the same maps. So a trunk exported as a *branch* takes the
children's model's `block3_pool` maps (the runtimes' `shared` output) and
runs only block 4's two convolutions, for the films the population check
sends to adults: children pay nothing, adults about a fifth of a pass more,
instead of a second network's whole pass.

The branch is only right if those three blocks really are the same weights at
the same input size. Both sides carry a fingerprint of them (`fingerprint`:
the weights as the run folder stores them, float16), and `continued_trunk`
refuses a branch whose fingerprint, layer or size differs from the runtime's:
the adult answer then does not serve, rather than reading maps it was never
fitted on.
"""

import hashlib

import numpy as np

SHARED_LAYER = "block3_pool"  # the last layer whose maps both networks compute alike
SHARED_BLOCKS = ("block1_", "block2_", "block3_")  # the layers whose weights make those maps


def fingerprint(layers) -> str:
    """sha256 of the shared blocks' weights, `layers` {layer name: [arrays]}, in name order, as float16:
    the children's model stores its weights so, and a pretrained file rounded alike must give the same."""
    digest = hashlib.sha256()
    for name in sorted(n for n in layers if n.startswith(SHARED_BLOCKS)):
        for array in layers[name]:
            # + 0 makes -0 +0: a weight of -2.5e-08 rounds to -0 in float16 here and was stored as +0.
            values = np.ascontiguousarray(np.asarray(array, np.float32).astype("<f2") + np.float16(0))
            digest.update(f"{name}{values.shape}".encode())
            digest.update(values.tobytes())
    return digest.hexdigest()


def description(layers, image_size) -> dict:
    """What a runtime's `shared` output is: the layer, the input size and the weights that made it."""
    return {"layer": SHARED_LAYER, "image_size": int(image_size), "fingerprint": fingerprint(layers)}


def mismatch(shared, trunk_description) -> str | None:
    """Why a branch (its trunk description) cannot continue a runtime whose `shared` output is
    described by `shared` (None: the runtime has none); None when it can."""
    if shared is None:
        return "the children's model gives no shared maps to continue (its ONNX files predate them)"
    for key, words in (("layer", "layer"), ("image_size", "input size"), ("fingerprint", "first blocks' weights")):
        if trunk_description.get(f"continues_{key}" if key != "layer" else "continues") != shared[key]:
            return f"it continues another children's model (its {words} differ)"
    return None


class ContinuedTrunk:
    """The adult trunk as a branch of the children's model's pass: `from_shared(shared maps)` is what
    serving calls with the maps that pass already made; calling it with model inputs makes the pass
    itself (for callers that have only images: fits, benchmarks). Same attributes as a whole trunk."""

    continues = True

    def __init__(self, runtime, branch):
        self._runtime, self._branch = runtime, branch
        self.image_size, self.layer, self.weights = branch.image_size, branch.layer, branch.weights
        self.channels = branch.channels

    def from_shared(self, shared) -> np.ndarray:
        return self._branch(shared)

    def __call__(self, inputs) -> np.ndarray:
        return self._branch(self._runtime.run(inputs)[2])
