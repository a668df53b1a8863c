"""How small may the adult trunk's input be? Its figures and its cost at each input size.

    python benchmarks/adult_trunk_size.py [--sizes 160,192,224] [--model RUN_FOLDER]
                                          [--adult-data ../shared/data/adult_cxr] [--seeds 3] [--runs 40]

For each size the trunk (training/adults/trunk.py: HED's VGG16 to
block4_conv2, int8) is written into a copy of the run folder; the films
that radiologists read are scored through the served pipeline, with the
fitted variants, as `python -m training.checks.scope RUN --only-adult` scores them;
the adult answer is cross-validated on them (training/adults/answer.py: five folds by
patient, over --seeds draws of the folds); and the trunk's pass alone is timed
on one adult film (--runs calls after a warm-up, as benchmarks/serving.py
times). That pass is what an adult's film costs on top of a child's, so the
smallest size that keeps the figures wins.

Printed: the mean over the draws of ROC AUC (opacity against normal), ROC AUC
against every film read without opacity, and sensitivity and specificity at
the threshold served (inner folds aiming at SENSITIVITY_TARGET), with the
range over the draws; then the pass's median. About 10 minutes a size
on 2 cores.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PNEUMO_RUNTIME", "onnx-int8")  # the children's pass as served by default with VNNI

from pneumo.model.loading import BUNDLED_DIR, load_model  # noqa: E402
from pneumo.model.preprocess import preprocess  # noqa: E402
from pneumo.model.run_folder import ADULT, ADULT_CHECK, ADULT_REPORT, ADULT_TRUNK  # noqa: E402
from training.adults import answer as adult  # noqa: E402
from training.adults.trunk import CALIBRATION_IMAGES, LAYER, calibration_films, write_trunk  # noqa: E402
from training.children.data import open_grey  # noqa: E402
from training.checks.scope import score_adults  # noqa: E402

from serving import time_calls  # noqa: E402 (benchmarks/serving.py, beside this file)

SHARED = ROOT.parent / "shared" / "data"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=lambda v: [int(s) for s in v.split(",")], default=[160, 192, 224])
    p.add_argument("--model", default=str(BUNDLED_DIR), help="the run folder whose adult answer is measured")
    p.add_argument("--adult-data", default=str(SHARED / "adult_cxr"))
    p.add_argument("--data", default=str(SHARED / "chest_xray"), help="children, for the int8 calibration")
    p.add_argument("--seeds", type=int, default=3, help="draws of the folds")
    p.add_argument("--runs", type=int, default=40, help="timed passes of the trunk")
    args = p.parse_args(argv)
    films = calibration_films(args.adult_data, args.data, CALIBRATION_IMAGES)
    labels = adult.read_labels(args.adult_data)
    timed = open_grey(sorted(Path(args.adult_data).glob("*.jpeg"))[0])
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            run = copy_without_adult_answer(Path(args.model), Path(tmp) / "run")
            write_trunk(run, "hed", LAYER, size, films)
            loaded = load_model(run)
            started = time.time()
            adults = score_adults(loaded, args.adult_data, adult.FITTED[1:], seed=2, only_read=True)
            figures = [adult.figures(adult.cross_validate(adults, labels, seed)) for seed in range(args.seeds)]
            trunk = loaded.adult_trunk
            inputs = preprocess(timed, size)
            rows.append((size, figures, time_calls(lambda _: trunk(inputs), args.runs)["p50"]))
            print(f"{size} px: scored in {time.time() - started:.0f} s", flush=True)
    print_table(rows, args.seeds)


def copy_without_adult_answer(folder, run):
    """The run folder, less its adult answer and trunk (each size gets its own)."""
    shutil.copytree(folder, run)
    for name in (ADULT, ADULT_REPORT, ADULT_CHECK, ADULT_TRUNK):
        (run / name).unlink(missing_ok=True)
    return run


def print_table(rows, seeds):
    keys = ("roc_auc", "roc_auc_all_read", "sensitivity", "specificity")
    print(f"\nmeans over {seeds} draws of the folds, their range in brackets\n")
    print("| trunk input | ROC AUC | vs all read | sensitivity | specificity | the trunk's pass alone, p50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, figures, p50 in rows:
        cells = []
        for key in keys:
            values = [f[key] for f in figures]
            cells.append(f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})")
        print(f"| {size} px | " + " | ".join(cells) + f" | {p50 * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
