"""How well does the not-a-chest-X-ray check (pneumo/checks/ood.py) separate X-rays
from everything else?

    python benchmarks/ood_eval.py [--model RUN_FOLDER] [--data ../shared/data/chest_xray]

Prints the share flagged among the val X-rays (the threshold was chosen on
them: at most 1% by construction), among the patients held out of train/
(an estimate on X-rays the check never saw) and among non-X-rays that PyPI packages
ship, so that it runs offline: scikit-image's bundled images, scikit-learn's
and Matplotlib's sample images, pydicom's CT and MR test files, and
generated blank, gradient and noise images. Every image takes the app's own
path: encoded, decoded by pneumo.inputs.decode, analysed by pneumo.analysis.
Targets: <= 1% of X-rays, >= 95% of non-X-rays.
"""

import argparse
import gzip
import io
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pneumo.inputs.decode import InputError, decode  # noqa: E402
from pneumo.model.loading import load_model  # noqa: E402
from pneumo.analysis import analyse_many  # noqa: E402
from pneumo.checks.ood import statistics_reason  # noqa: E402
from pneumo.inputs.photo import film_of  # noqa: E402
from pneumo.model.predict import model_outputs  # noqa: E402
from pneumo.model.preprocess import preprocess  # noqa: E402
from pneumo.checks.scope import NOT_CHEST_XRAY  # noqa: E402

# scikit-image images bundled in its wheel (the others need a download).
SKIMAGE = {
    "photo": ["astronaut", "camera", "coffee", "chelsea", "rocket", "horse", "coins", "clock", "moon"],
    "document or drawing": ["page", "text", "logo", "colorwheel", "checkerboard", "binary_blobs"],
    "texture": ["brick", "grass", "gravel"],
    "microscopy, eye, sky": ["cell", "immunohistochemistry", "retina", "microaneurysms", "hubble_deep_field"],
    "other modality": ["shepp_logan_phantom"],
}
DICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"]


def png_bytes(array) -> bytes:
    array = np.asarray(array)
    if array.dtype == bool:
        array = np.uint8(array) * 255
    if array.dtype != np.uint8:
        array = np.uint8(np.clip(255.0 * (array - array.min()) / max(np.ptp(array), 1e-12), 0, 255))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def non_xrays():
    """(group, name, bytes or path) of every non-X-ray that loads offline."""
    import skimage.data

    for group, names in SKIMAGE.items():
        for name in names:
            try:
                yield group, name, png_bytes(getattr(skimage.data, name)())
            except Exception as error:  # noqa: BLE001 - not bundled in this version: say so and go on
                print(f"skipped skimage.data.{name}: {type(error).__name__}", file=sys.stderr)
    yield from _other_packages()
    yield from _generated()


def _other_packages():
    import matplotlib
    import pydicom
    import sklearn.datasets

    for name in ("china.jpg", "flower.jpg"):
        yield "photo", name, Path(sklearn.datasets.__file__).parent / "images" / name
    samples = Path(matplotlib.get_data_path()) / "sample_data"
    yield "photo", "grace_hopper.jpg", samples / "grace_hopper.jpg"
    yield "document or drawing", "matplotlib logo2.png", samples / "logo2.png"
    # A 256 x 256 big-endian 16-bit MRI slice of a head.
    mri = np.frombuffer(gzip.decompress((samples / "s1045.ima.gz").read_bytes()), ">u2").reshape(256, 256)
    yield "other modality", "s1045 MRI (matplotlib)", png_bytes(mri.astype(np.float64))
    tests = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in DICOM_FILES:
        if (tests / name).is_file():
            yield "other modality", name, tests / name


def _generated(size=256):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    yield "blank or noise", "black", np.zeros((size, size), np.uint8)
    yield "blank or noise", "white", np.full((size, size), 255, np.uint8)
    yield "blank or noise", "grey", np.full((size, size), 128, np.uint8)
    yield "blank or noise", "faint noise on grey", np.uint8(128 + rng.normal(0, 3, (size, size)))
    yield "blank or noise", "horizontal gradient", np.uint8(255 * x)
    yield "blank or noise", "radial gradient", np.uint8(255 * np.clip(1 - np.hypot(x - .5, y - .5) * 2, 0, 1))
    yield "blank or noise", "uniform noise", rng.integers(0, 256, (size, size), dtype=np.uint8)
    yield "blank or noise", "gaussian noise", np.uint8(np.clip(rng.normal(128, 40, (size, size)), 0, 255))
    yield "blank or noise", "salt and pepper", np.uint8(255 * (rng.random((size, size)) < 0.5))
    yield "blank or noise", "colour noise", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def load(item):
    """bytes, a path or a uint8 array -> decoded PIL image."""
    if isinstance(item, np.ndarray):
        item = png_bytes(item)
    return decode(item).image


def flags(loaded, images):
    """(flagged by the app's path, by the statistics alone, by the features alone) per image."""
    app = [a.scope == NOT_CHEST_XRAY for a in analyse_many(images, loaded)]
    films = [film_of(image).image for image in images]  # what the checks see: the film of a photo
    statistics = [statistics_reason(film) is not None for film in films]
    features = [False] * len(images)
    if loaded.ood_check is not None:
        inputs = np.concatenate([preprocess(film, loaded.config["image_size"]) for film in films])
        pooled = model_outputs(loaded, inputs).pooled
        features = list(loaded.ood_check.distance(pooled) > loaded.ood_check.threshold)
    return np.array([app, statistics, features], dtype=float).T


def xray_sets(data):
    """val/ (the threshold was chosen on it) and the patients that training
    held out of train/ (--holdout-fraction 0.1 --seed 0: never seen by the fit)."""
    from training.children.data import DataError, load_splits

    try:
        splits = load_splits(data, holdout_fraction=0.1, seed=0)
    except DataError as error:
        print(f"no X-rays: {error}", file=sys.stderr)
        return {}
    return {f"{name} X-rays": [s.path for s in splits.reports[name]]
            for name in ("val", "train_holdout") if splits.reports.get(name)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder (default: the bundled model)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    args = parser.parse_args(argv)
    loaded = load_model(args.model)
    print(f"model {loaded.identity['name']} from {loaded.identity['path']}; "
          f"feature check: {'yes' if loaded.ood_check is not None else 'no (no ood.npz): statistics only'}")

    rows, missed = [], []
    for name, xrays in xray_sets(args.data).items():
        flagged = np.concatenate([flags(loaded, [load(p) for p in xrays[start:start + 64]])
                                  for start in range(0, len(xrays), 64)])
        rows.append(("X-ray", name, len(xrays), flagged.mean(axis=0)))
    groups = {}
    for group, name, item in non_xrays():
        try:
            groups.setdefault(group, []).append((name, load(item)))
        except InputError as error:
            print(f"skipped {name}: {error}", file=sys.stderr)
    all_flags = []
    for group, items in groups.items():
        flagged = flags(loaded, [image for _, image in items])
        all_flags.append(flagged)
        missed += [name for (name, _), f in zip(items, flagged[:, 0]) if not f]
        rows.append(("not X-ray", group, len(items), flagged.mean(axis=0)))
    all_flags = np.concatenate(all_flags)
    rows.append(("not X-ray", "all non-X-rays", len(all_flags), all_flags.mean(axis=0)))

    print("\nflagged: by the app (either check) | by the image statistics alone | by the model's features alone")
    print(f"\n| {'kind':<9} | {'set':<22} | images | flagged | statistics | features |")
    print(f"|{'-' * 11}|{'-' * 24}|--------|---------|------------|----------|")
    for kind, name, count, (app, statistics, features) in rows:
        print(f"| {kind:<9} | {name:<22} | {count:>6} | {app:>7.1%} | {statistics:>10.1%} | {features:>8.1%} |")
    print(f"\nnon-X-rays not flagged: {', '.join(missed) or 'none'}")


if __name__ == "__main__":
    main()
