"""Do train/ and val/ share children? Patient numbers that appear in both, and whether their films look alike.

    python benchmarks/split_overlap.py [--data ../shared/data/chest_xray]

The collection names each film after its patient: `IM-PPPP-NNNN` and `NORMAL2-IM-PPPP-NNNN` (normals),
`personP_bacteria_N` and `personP_virus_N` (pneumonias). Read as a bare number, some patients appear
in both splits. This prints how many, in which naming series, and how alike their films are: each
film's best correlation (32 x 32 thumbnails, mean removed) with the films of the same number in the
other split, against as many films of other numbers drawn at random; and the same within train/, where
films of one number in one series are one child by the collection's own naming (the control).
"""

import argparse
import collections
import re
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(NORMAL2-IM|IM)-0*(\d+)|person(\d+)_(bacteria|virus)")


def series_and_number(path) -> tuple[str, int]:
    """("IM" | "NORMAL2-IM" | "bacteria" | "virus", the patient number)."""
    match = NAME.match(path.name)
    return (match.group(1), int(match.group(2))) if match.group(1) else (match.group(4), int(match.group(3)))


def thumbnail(path, side=32) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), np.float64).ravel()
    pixels -= pixels.mean()
    return pixels / (np.linalg.norm(pixels) + 1e-9)


def alike(similarity, rows, mates_of, others_of, rng):
    """For each row: its best correlation with its mates, and with as many random others."""
    same, other = [], []
    for row in rows:
        mates = mates_of(row)
        same.append(similarity[row, mates].max())
        other.append(similarity[row, rng.choice(others_of(row), len(mates), replace=False)].max())
    same, other = np.array(same), np.array(other)
    return (f"best correlation with the same number's films: median {np.median(same):.3f}, max {same.max():.3f}; "
            f"with as many random films of other numbers: median {np.median(other):.3f}, max {other.max():.3f}; "
            f"same number the more alike in {np.mean(same > other):.0%} of {len(same)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    train, val = (sorted((Path(args.data) / split).rglob("*.jpeg")) for split in ("train", "val"))
    named = {split: [series_and_number(path) for path in files] for split, files in (("train", train), ("val", val))}
    numbers = {split: {number for kind, number in keys if kind in ("IM", "NORMAL2-IM")} |
               {-number for kind, number in keys if kind in ("bacteria", "virus")} for split, keys in named.items()}
    shared = numbers["train"] & numbers["val"]  # normals' numbers positive, pneumonias' negative
    print(f"patient numbers in both splits: {len(shared)} ({sum(n > 0 for n in shared)} IM-PPPP, "
          f"{sum(n < 0 for n in shared)} personP)")
    print(f"(series, number) in both splits: {len(set(named['train']) & set(named['val']))}")
    for kind in ("IM", "NORMAL2-IM", "bacteria", "virus"):
        spans = {split: sorted({n for k, n in keys if k == kind}) for split, keys in named.items()}
        print(f"  {kind}: train/ {len(spans['train'])} numbers ({spans['train'][0]}-{spans['train'][-1]}), "
              f"val/ {len(spans['val'])} ({spans['val'][0]}-{spans['val'][-1]})")
    pairs = collections.Counter()
    for kind_val, number in set(named["val"]):
        key = number if kind_val in ("IM", "NORMAL2-IM") else -number
        if key in shared:
            kinds_train = sorted({k for k, n in set(named["train"]) if n == number and (k in ("IM", "NORMAL2-IM")) == (key > 0)})
            pairs[f"val/ {kind_val} with train/ {'/'.join(kinds_train)}"] += 1
    for pair, count in pairs.most_common():
        print(f"  {pair}: {count}")

    thumbs = {split: np.stack([thumbnail(path) for path in files]) for split, files in (("train", train), ("val", val))}
    across = thumbs["val"] @ thumbs["train"].T
    bare = {split: np.array([n if k in ("IM", "NORMAL2-IM") else -n for k, n in keys]) for split, keys in named.items()}
    rows = np.flatnonzero(np.isin(bare["val"], list(shared)))
    print(f"\nval/ films with a number also in train/: {len(rows)} of {len(val)}")
    print("  " + alike(across, rows, lambda r: np.flatnonzero(bare["train"] == bare["val"][r]),
                       lambda r: np.flatnonzero(bare["train"] != bare["val"][r]), rng))
    nearest = across.argmax(axis=1)
    print(f"  nearest train/ film has the same number: {int(np.sum(bare['train'][nearest[rows]] == bare['val'][rows]))} "
          f"of {len(rows)}; every val/ film's nearest train/ film: correlation median {np.median(across.max(axis=1)):.3f}, "
          f"max {across.max():.3f}")

    within = thumbs["train"] @ thumbs["train"].T
    np.fill_diagonal(within, -1.0)
    keys = np.array([f"{k}:{n}" for k, n in named["train"]])
    numbers_train = bare["train"]
    for label, same_series in (("same series (one child)", True), ("other series, same number", False)):
        rows_t = []
        for key in sorted(set(keys)):
            first = np.flatnonzero(keys == key)[0]
            mates = np.flatnonzero((numbers_train == numbers_train[first]) & ((keys == key) == same_series))
            if len(mates[mates != first]):
                rows_t.append(first)

        def mates_of(r, same_series=same_series):
            mates = np.flatnonzero((numbers_train == numbers_train[r]) & ((keys == keys[r]) == same_series))
            return mates[mates != r]

        print(f"control, within train/, {label}: " + alike(
            within, rows_t, mates_of, lambda r: np.flatnonzero(numbers_train != numbers_train[r]), rng))


if __name__ == "__main__":
    main()
