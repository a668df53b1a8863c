"""Fit the mirrored-film check (pneumo/anatomy/mirror.py, MirrorCheck) and print its figures.

    python -m training.anatomy.mirror [--data ../shared/data] [--children N] [--out pneumo/bundled_model/mirror.npz]

Each film is read as served (pneumo.inputs.decode, then pneumo/analysis.py's first step: a photo's
film, turned upright, its lungs and heart by the bundled segmenter), once as it is and once mirrored
left to right before that step; the check learns to tell the two apart from the chest crop's
antisymmetric part (pneumo/anatomy/mirror.py `features`).

Fitted on films that no evaluation set holds:
- children: every patient of chest_xray/train (or `--children` of them, half NORMAL, half PNEUMONIA),
  one film each (the first by name), none of a patient with a film in val/ (the patient is the file
  name's `personN` or `IM-N`);
- adults: adult_cxr films of the open patients (training/adults/locked.py: a locked patient's film is
  never opened here) in the fitting half: crc32 of the patient id even (`fitting_half`). The other
  open half is the adults' evaluation set, split by patient.
Adults and children weigh the same in all. The threshold is the log-odds that 0.7% of the upright
films pass, children and adults each, out of fold (five folds by patient): the larger of the two.

Figures (caught: mirrored films warned; false: upright films warned), the new check beside the
heart's share alone (MIRRORED_SHARE), on val/ children, JSRT films (all; the 49 the segmenter did
not train on), the other half of the open adults, and those of them read Lung Opacity.
"""

import argparse
import json
import re
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import ImageOps

from pneumo.anatomy.mirror import CHANNELS, MIRRORED_SHARE, SIDE, MirrorCheck, features, heart_share_on_image_left
from pneumo.anatomy.segmenter import bundled_segmenter
from pneumo.inputs.decode import decode
from pneumo.inputs.orientation import OrientationCheck, upright
from pneumo.inputs.photo import film_of
from pneumo.model.run_folder import ANATOMY_REPORT, BUNDLED_DIR
from training.adults.locked import open_rows

ROOT = Path(__file__).resolve().parents[2]
# sklearn's C (inverse L2 strength): 0.01-0.3 measured alike on these films (0.1: a little more caught,
# a little more upright adults called mirrored); 0.03 kept the adults' false calls where the heart's share had them.
C = 0.03
UPRIGHT_PASSING = 0.007  # the share of upright fitting films (out of fold) above the threshold
FOLDS = 5
BATCH = 16


def child_patient(name: str) -> str:
    """A chest_xray file name -> its patient: `person123` (PNEUMONIA), `IM-0115` or `NORMAL2-IM-0007` (NORMAL)."""
    match = re.match(r"(person\d+)_", name) or re.match(r"((?:NORMAL2-)?IM-\d+)", name)
    return match.group(1) if match else name


def children(folder: Path, count: int | None, rng) -> list[tuple[Path, str]]:
    """The patients of chest_xray/train (`count` of them, half of each class, when given; none with a film
    in val/), one film each."""
    val = {child_patient(p.name) for p in (folder / "val").rglob("*.jpeg")}
    chosen = []
    for kind in ("NORMAL", "PNEUMONIA"):
        first = {}
        for path in sorted((folder / "train" / kind).glob("*.jpeg")):
            if child_patient(path.name) not in val:
                first.setdefault(child_patient(path.name), path)
        patients = sorted(first)
        picked = range(len(patients)) if not count else rng.choice(len(patients), min(count // 2, len(patients)),
                                                                   replace=False)
        chosen += [(first[patients[i]], patients[i]) for i in sorted(picked)]
    return chosen


def fitting_half(patient: str) -> bool:
    """The open adults' half that the fit uses; the other half is its evaluation set."""
    return zlib.crc32(patient.encode()) % 2 == 0


def open_adults(folder: Path) -> tuple[list, list]:
    """The open patients' films (locked ones are never listed): (fitting half, evaluation half), each
    [(path, patient, reading)]."""
    rows = [(folder / name, row["patient"], row.get("rsna_class", ""))
            for name, row in sorted(open_rows(folder).items())]
    return [r for r in rows if fitting_half(r[1])], [r for r in rows if not fitting_half(r[1])]


class Reader:
    """Films -> (features, heart share) as served, upright and mirrored."""

    def __init__(self):
        self.orientation = OrientationCheck.load(BUNDLED_DIR)
        self.segmenter = bundled_segmenter()

    def read(self, paths) -> dict:
        """paths -> {"upright"|"mirrored": (features (N, F) with NaN rows where no two lungs and heart, share (N,))}."""
        out = {"upright": ([], []), "mirrored": ([], [])}
        for start in range(0, len(paths), BATCH):
            images = [decode(p).image for p in paths[start:start + BATCH]]
            for key, batch in (("upright", images), ("mirrored", [ImageOps.mirror(i) for i in images])):
                films = [upright(film_of(image), self.orientation) for image in batch]
                for film, anatomy in zip(films, self.segmenter.segment([f.image for f in films])):
                    found = features(film.image, anatomy)
                    out[key][0].append(found)
                    out[key][1].append(heart_share_on_image_left(anatomy))
        size = next(f.size for f in out["upright"][0] + out["mirrored"][0] if f is not None)
        return {key: (np.array([np.full(size, np.nan) if f is None else f for f in found]),
                      np.array([np.nan if s is None else s for s in shares]))
                for key, (found, shares) in out.items()}


def fit(X, y, weights) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=5000).fit(X, y, sample_weight=weights)
    return model.coef_[0], float(model.intercept_[0])


def fit_check(read: dict, patients: np.ndarray, adult: np.ndarray) -> tuple[MirrorCheck, dict]:
    """Fitting films read upright and mirrored -> the check, with its threshold out of fold."""
    from sklearn.model_selection import GroupKFold

    X = np.concatenate([read["upright"][0], read["mirrored"][0]])
    y = np.r_[np.zeros(len(patients)), np.ones(len(patients))]
    groups, grown = np.r_[patients, patients], np.r_[adult, adult]
    weights = np.where(grown, (~adult).sum() / max(adult.sum(), 1), 1.0)  # adults weigh as much as children
    found = ~np.isnan(X).any(axis=1)
    out_of_fold = np.full(len(y), -np.inf)
    for train, test in GroupKFold(FOLDS).split(X, y, groups):
        train, test = train[found[train]], test[found[test]]
        coef, intercept = fit(X[train], y[train], weights[train])
        out_of_fold[test] = X[test] @ coef + intercept
    coef, intercept = fit(X[found], y[found], weights[found])
    upright_scores = out_of_fold[y == 0]
    threshold = max(float(np.quantile(upright_scores[population], 1 - UPRIGHT_PASSING))
                    for population in (~adult, adult) if population.any())
    check = MirrorCheck(coef.reshape(len(CHANNELS), SIDE, SIDE // 2), intercept, threshold).as_saved()
    figures = {}
    for name, population in (("children (out of fold)", ~adult), ("adults (out of fold)", adult)):
        up, mirrored = out_of_fold[:len(adult)][population], out_of_fold[len(adult):][population]
        figures[name] = (int((mirrored > threshold).sum()), len(mirrored), int((up > threshold).sum()), len(up))
    return check, figures


def figures_of(check: MirrorCheck, read: dict) -> dict:
    """-> {"check": (caught, n, false, n), "heart share": (...)} on films read upright and mirrored."""
    def called(key):
        found, shares = read[key]
        scores = np.where(np.isnan(found).any(axis=1), -np.inf, check.log_odds(np.nan_to_num(found)))
        return scores > check.threshold, np.nan_to_num(shares, nan=0.0) > MIRRORED_SHARE
    (check_up, share_up), (check_mirrored, share_mirrored) = called("upright"), called("mirrored")
    n = len(check_up)
    return {"check": (int(check_mirrored.sum()), n, int(check_up.sum()), n),
            "heart share": (int(share_mirrored.sum()), n, int(share_up.sum()), n)}


def subset(read: dict, keep: np.ndarray) -> dict:
    return {key: (found[keep], shares[keep]) for key, (found, shares) in read.items()}


def cells(figures) -> str:
    caught, n, false, m = figures
    return f"{100 * caught / n:.1f}% ({caught}) | {100 * false / m:.1f}% ({false})"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.anatomy.mirror", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--children", type=int, default=0, help="children's patients to fit on (default 0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(BUNDLED_DIR / MirrorCheck.FILE))
    args = p.parse_args(argv)
    data, started = Path(args.data), time.time()
    rng = np.random.default_rng(args.seed)
    reader = Reader()

    kids = children(data / "chest_xray", args.children, rng)
    grown, held = open_adults(data / "adult_cxr")
    paths = [path for path, _ in kids] + [path for path, _, _ in grown]
    patients = np.array([patient for _, patient in kids] + [patient for _, patient, _ in grown])
    adult = np.r_[np.zeros(len(kids), bool), np.ones(len(grown), bool)]
    check, fitted = fit_check(reader.read(paths), patients, adult)
    check.save(args.out)
    print(f"fitted on {len(kids)} children and {len(grown)} adult films ({len(set(patients[adult]))} open patients), "
          f"each upright and mirrored; threshold {check.threshold:.3f} (log-odds); saved {args.out}")

    val = sorted((data / "chest_xray" / "val").rglob("*.jpeg"))
    jsrt = sorted((data / "lung_masks" / "images").glob("*.png"))
    held_out = set(json.loads((BUNDLED_DIR / ANATOMY_REPORT).read_text())["held_out"])
    held_read = reader.read([path for path, _, _ in held])
    opacity = np.array([reading == "Lung Opacity" for _, _, reading in held])
    jsrt_read = reader.read(jsrt)
    in_held_out = np.array([path.name in held_out for path in jsrt])
    sets = {"val/ children": reader.read(val), "JSRT, all": jsrt_read,
            "JSRT, the segmenter's held-out films": subset(jsrt_read, in_held_out),
            "adults, the open half not fitted": held_read,
            "adults, the open half not fitted, read Lung Opacity": subset(held_read, opacity)}
    print("\nmirrored caught / upright called mirrored (films):\n")
    print("| set | films | caught | upright called | heart share alone: caught | upright called |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, figures in fitted.items():
        print(f"| fitting films, {name} | {figures[1]} | {cells(figures)} | | |")
    for name, read in sets.items():
        figures = figures_of(check, read)
        print(f"| {name} | {figures['check'][1]} | {cells(figures['check'])} | {cells(figures['heart share'])} |")
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
