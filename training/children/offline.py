"""What a training machine without internet needs, in one folder small enough to carry.

    python -m training.children.offline OUT --data ../shared/data/chest_xray \
        [--adult-data ../shared/data/adult_cxr] [--side 256] [--hed-blocks 4] [--wheels-python 3.12]

OUT/chest_xray/{train,val}/{NORMAL,PNEUMONIA}/   the films as greyscale WebP, at most --side px
OUT/adult_cxr/                                   the same for adults, and their labels.csv
OUT/hed.npz                                      HED's VGG16 blocks (training/children/pretrained.py; --pretrained OUT/hed.npz)
OUT/wheels/                                      what a machine with JAX but without Keras lacks
                                                 (requirements-train-jax.txt's Keras and imgaug fork, and
                                                 their needs), for `pip install --no-index --no-deps`

The films keep their names, with the suffix .webp: classes, patients and
labels.csv's rows are read from names, so every split stays the same.
--side must be at least the training --image-size (the model squashes
each film to its square anyway). About 40 MB with the shared data here.
"""

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from PIL import Image

from training.children.data import IMAGE_SUFFIXES
from training.children.pretrained import hed_layers, save_layers

SIDE = 256  # enough for 224 px training
QUALITY = 85  # WebP: no visible loss at this size, a fifth of the JPEG bytes
# What a machine with JAX, numpy, scikit-learn, scipy, scikit-image, OpenCV, h5py, rich and Pillow
# lacks; pinned as requirements-train-jax.txt (and requirements-train.txt's resolution) pin them.
WHEELS = ("keras==3.15.1", "imaug==0.4.3", "namex==0.1.0", "optree==0.20.0", "shapely==2.2.0")


def shrink(source: Path, target: Path, side=SIDE):
    """One film -> greyscale WebP, its longer side at most `side`."""
    with Image.open(source) as image:
        grey = image.convert("L")
        grey.thumbnail((side, side), Image.Resampling.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        grey.save(target.with_suffix(".webp"), "WEBP", quality=QUALITY)


def copy_children(data: Path, out: Path, side=SIDE) -> int:
    """Every film of data/{train,val,test}/ (test/ only where present), same layout."""
    films = [p for split in ("train", "val", "test") if (data / split).is_dir()
             for p in sorted((data / split).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    for path in films:
        shrink(path, out / path.relative_to(data), side)
    return len(films)


def copy_adults(data: Path, out: Path, side=SIDE) -> int:
    """The adult films that labels.csv names, and labels.csv with their new names."""
    with open(data / "labels.csv") as f:
        reader = csv.DictReader(f)
        rows, fields = [row for row in reader if (data / row["file"]).is_file()], reader.fieldnames
    out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        shrink(data / row["file"], out / row["file"], side)
        row["file"] = str(Path(row["file"]).with_suffix(".webp"))
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def download_wheels(out: Path, python_version: str):
    """The wheels for CPython `python_version` on x86-64 Linux (binary ones for that version only)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "--implementation", "cp",
                    *[arg for n in (17, 28) for arg in ("--platform", f"manylinux_2_{n}_x86_64")],
                    "--platform", "manylinux2014_x86_64", "-d", str(out), *WHEELS], check=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.children.offline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder to write (ignored by git: e.g. gpu_bundle/)")
    p.add_argument("--data", default="../shared/data/chest_xray", help="children: train/, val/ (and test/)")
    p.add_argument("--adult-data", default=None, help="adult films with labels.csv (for --train-adults)")
    p.add_argument("--side", type=int, default=SIDE, help="longest side of the copied films, in px")
    p.add_argument("--hed-blocks", type=int, default=4, help="HED VGG16 blocks to export (0: none)")
    p.add_argument("--int8", action="store_true", help="HED kernels as int8 (half the size, within 2%%)")
    p.add_argument("--wheels-python", default=None, metavar="X.Y",
                   help="also download the wheels, for this CPython version (needs PyPI)")
    args = p.parse_args(argv)
    out = Path(args.out)
    print(f"children: {copy_children(Path(args.data), out / 'chest_xray', args.side)} films")
    if args.adult_data:
        print(f"adults: {copy_adults(Path(args.adult_data), out / 'adult_cxr', args.side)} films")
    if args.hed_blocks:
        layers = {name: w for name, w in hed_layers().items() if int(name[5]) <= args.hed_blocks}
        save_layers(layers, out / "hed.npz", int8=args.int8)
    if args.wheels_python:
        download_wheels(out / "wheels", args.wheels_python)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
