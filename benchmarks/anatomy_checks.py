"""What the film's anatomy says, per set: lungs and heart found, mirrored films, and the checks on it.

    python benchmarks/anatomy_checks.py [--data ../shared/data] [--per-set 300] [--seed 0]

Sets: val/ children (NORMAL and PNEUMONIA), JSRT films (lung_masks: adults of another country and
machine), adult_cxr films (NIH; those read `Lung Opacity` on their own row: the white lungs), phone
photos of val/ films (training/checks/photos.py), and the non-X-rays of benchmarks/ood_eval.py plus a
blurred grey face the size of a thumbnail. Each image goes through the served pipeline
(pneumo.analysis.analyse_many, the bundled model, PNEUMO_* settings as in the app). Columns:

- two lungs, heart, no lungs: the segmenter (pneumo/anatomy/segmenter.py) found both lungs / the heart /
  neither lung, on the film the pipeline reads (a photo's film, turned back);
- mirrored warned: the film got the mirrored warning, as uploaded and mirrored left to right;
  same side: the mirrored copy's PNEUMONIA zones name the same lungs as the original's;
- not_chest_xray, verdict: the scope the pipeline gave.

A second table gives the mirrored films' figures with their counts, on the films that no fit of the
mirror check saw (training/anatomy/mirror.py: it fitted on chest_xray/train children and on half of the
open adult patients, so those adults are left out here; JSRT films also as the segmenter's held-out ones).
"""

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ood_eval import load as load_non_xray, non_xrays  # noqa: E402

from pneumo.analysis import analyse_many  # noqa: E402
from pneumo.anatomy.mirror import MIRRORED  # noqa: E402
from pneumo.checks.scope import NOT_CHEST_XRAY, OK  # noqa: E402
from pneumo.inputs.orientation import upright  # noqa: E402
from pneumo.inputs.photo import film_of  # noqa: E402
from pneumo.model.loading import load_model  # noqa: E402
from pneumo.model.run_folder import ANATOMY_REPORT, BUNDLED_DIR  # noqa: E402
from training.adults.locked import locked_patients  # noqa: E402
from training.anatomy.mirror import fitting_half  # noqa: E402
from training.checks.photos import photo_of_film  # noqa: E402


def blurred_face() -> Image.Image:
    """A grey photo of a face, small and soft as a thumbnail."""
    import skimage.data

    face = Image.fromarray(skimage.data.astronaut()).crop((140, 20, 340, 220)).convert("L")
    return face.resize((96, 96), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(2)).resize((256, 256))


def sets(data: Path, per_set: int, rng) -> tuple[dict, dict]:
    """-> ({set: images}, {subset of a set: (the set, which of its images)}): the subsets for the mirrored
    films' table."""
    def pick(paths):
        paths = sorted(paths)
        return [paths[i] for i in sorted(rng.choice(len(paths), min(per_set, len(paths)), replace=False))]
    opened = lambda paths: [Image.open(p) for p in paths]  # noqa: E731
    rows = list(csv.DictReader(open(data / "adult_cxr" / "labels.csv")))
    opacity = [data / "adult_cxr" / r["file"] for r in rows if r["rsna_class"] == "Lung Opacity"]
    others = [data / "adult_cxr" / r["file"] for r in rows if r["rsna_class"] != "Lung Opacity"]
    val = sorted((data / "chest_xray" / "val").rglob("*.jpeg"))
    out = {
        "val/ children": opened(val),
        "JSRT (lung_masks)": opened(pick((data / "lung_masks" / "images").glob("*.png"))),
        "adult_cxr, not read Lung Opacity": opened(pick(others)),
        "adult_cxr, Lung Opacity": opened(opacity),
        "phone photos of val/ films": [photo_of_film(Image.open(p).convert("L"), rng) for p in pick(val)],
    }
    out["non-X-rays (ood_eval) and a blurred face"] = [load_non_xray(item) for _, _, item in non_xrays()] + \
        [blurred_face()]
    held_out = set(json.loads((BUNDLED_DIR / ANATOMY_REPORT).read_text())["held_out"])
    locked, patient = locked_patients(data / "adult_cxr"), {r["file"]: r["patient"] for r in rows}
    def unseen(image):  # an adult whom the mirror check's fit did not read: locked, or in the open half it left
        who = patient[Path(image.filename).name]
        return who in locked or not fitting_half(who)
    subsets = {"val/ children": ("val/ children", None),
               "JSRT, the segmenter's held-out films": ("JSRT (lung_masks)",
                                                        lambda image: Path(image.filename).name in held_out),
               "JSRT, all drawn": ("JSRT (lung_masks)", None),
               "adult_cxr, not read Lung Opacity, not in the mirror fit": ("adult_cxr, not read Lung Opacity", unseen),
               "adult_cxr, Lung Opacity, not in the mirror fit": ("adult_cxr, Lung Opacity", unseen),
               "phone photos of val/ films": ("phone photos of val/ films", None)}
    return out, {name: (key, [keep is None or keep(i) for i in out[key]]) for name, (key, keep) in subsets.items()}


def measure(loaded, images) -> dict:
    results = [a for start in range(0, len(images), 16) for a in analyse_many(images[start:start + 16], loaded)]
    mirrored = [a for start in range(0, len(images), 16)
                for a in analyse_many([ImageOps.mirror(i.convert("L") if i.mode not in ("L", "RGB") else i)
                                       for i in images[start:start + 16]], loaded)]
    drawn = [a for start in range(0, len(images), 16)  # on the film the pipeline reads (a photo's film)
             for a in loaded.segmenter.segment([upright(film_of(i), loaded.orientation_check).image
                                                for i in images[start:start + 16]])]
    found = lambda key: np.mean([getattr(a, key) is not None for a in drawn])  # noqa: E731
    both = np.mean([a.right is not None and a.left is not None for a in drawn])
    none = np.mean([a.right is None and a.left is None for a in drawn])
    warned = lambda rs: np.mean([MIRRORED in r.warnings for r in rs])  # noqa: E731
    flags = lambda rs: np.array([MIRRORED in r.warnings for r in rs])  # noqa: E731
    pairs = [(a, b) for a, b in zip(results, mirrored) if a.location and b.location]
    same = np.mean([{z.split()[0] for z in a.location["zones"]} == {z.split()[0] for z in b.location["zones"]}
                    for a, b in pairs]) if pairs else float("nan")
    return {"n": len(images), "two lungs": both, "heart": found("heart"), "no lungs": none,
            "mirrored warned (as uploaded)": warned(results), "mirrored warned (mirrored)": warned(mirrored),
            "same side": same, "not_chest_xray": np.mean([r.scope == NOT_CHEST_XRAY for r in results]),
            "verdict": np.mean([r.scope == OK for r in results]),
            "_warned": (flags(results), flags(mirrored))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--per-set", type=int, default=300, help="films drawn from the larger sets (default 300)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    loaded = load_model()
    print(f"model {loaded.identity['name']} ({loaded.identity['runtime']}); segmenter: "
          f"{'yes' if loaded.segmenter is not None else 'none'}")
    images, subsets = sets(Path(args.data), args.per_set, np.random.default_rng(args.seed))
    table = {name: measure(loaded, films) for name, films in images.items()}
    columns = [c for c in next(iter(table.values())) if not c.startswith("_")]
    print("\n| set | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for name, row in table.items():
        cells = [str(row["n"])] + [f"{100 * row[c]:.1f}%" for c in columns[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nMirrored films, on films no fit of the mirror check saw: caught (warned when mirrored), and upright "
          "films called mirrored (warned as uploaded)\n")
    print("| set | films | mirrored caught | upright called mirrored |\n| --- | --- | --- | --- |")
    for name, (key, keep) in subsets.items():
        upright_warned, mirrored_warned = (flags[np.array(keep, bool)] for flags in table[key]["_warned"])
        n = len(upright_warned)
        print(f"| {name} | {n} | {100 * mirrored_warned.mean():.1f}% ({mirrored_warned.sum()}) | "
              f"{100 * upright_warned.mean():.1f}% ({upright_warned.sum()}) |")


if __name__ == "__main__":
    main()
