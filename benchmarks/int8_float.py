"""int8 against float: the same films through the served pipeline on `onnx-int8` and on `onnx-float`.

    python benchmarks/int8_float.py [--model RUN_FOLDER] [--data ../shared/data/chest_xray]
                                    [--adult-data ../shared/data/adult_cxr] [--adults N]

A CPU with VNNI serves the children's model in int8 (`auto`), one without it in float; the scope
checks (ood.npz, population.npz) were fitted on the maps of the runtime of the machine that fitted
them, and the adult trunk is int8 on every CPU. So each film of `val/` and of the adult films is
analysed (pneumo.analysis.analyse_many) under both runtimes, and this prints how far apart they
land: the scope, whose answer, the label, and the largest changes of P(pneumonia), P(adult) and
the not-a-chest-X-ray distance. The tests' tolerances between runtimes come from these figures.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pneumo.analysis import analyse_many  # noqa: E402
from pneumo.inputs.decode import decode  # noqa: E402
from pneumo.model.loading import BUNDLED_DIR, load_model  # noqa: E402

RUNTIMES = ("onnx-int8", "onnx-float")


def compare(results):
    """{runtime: [Analysis]} for the same films -> one row of figures."""
    a, b = (results[name] for name in RUNTIMES)
    same_answer = [x.scope == y.scope and x.population == y.population for x, y in zip(a, b)]
    both = [(x, y) for x, y, same in zip(a, b, same_answer) if same and x.label is not None]

    def largest(gaps):
        return (max(gaps), float(np.quantile(gaps, 0.99))) if gaps else (float("nan"), float("nan"))

    def checks(key):
        return largest([abs(x.checks[key] - y.checks[key]) for x, y in zip(a, b) if key in x.checks and key in y.checks])

    by_answer = {}
    for x, y in both:
        by_answer.setdefault(x.population, []).append(abs(x.pneumonia_probability - y.pneumonia_probability))
    return {"films": len(a), "another scope or answer": len(a) - sum(same_answer),
            "another label": sum(x.label != y.label for x, y in both),
            "P(pneumonia)": largest([abs(x.pneumonia_probability - y.pneumonia_probability) for x, y in both]),
            "P(adult)": checks("adult_probability"), "distance": checks("chest_xray_distance"),
            "by answer": {population: max(gaps) for population, gaps in by_answer.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_DIR))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    p.add_argument("--adult-data", default=str(ROOT.parent / "shared" / "data" / "adult_cxr"))
    p.add_argument("--adults", type=int, default=0, help="only the first N adult films (0: all)")
    args = p.parse_args(argv)
    models = {name: load_model(args.model, runtime=name) for name in RUNTIMES}
    adults = sorted(Path(args.adult_data).glob("*.jpeg"))
    sets = {"val/ children": sorted((Path(args.data) / "val").rglob("*.jpeg")),
            "adult films": adults[:args.adults] if args.adults else adults}
    print(f"model {args.model}; {RUNTIMES[0]} against {RUNTIMES[1]}, the same films\n")
    print("| set | films | another scope or answer | another label, same answer | P(pneumonia): largest change, "
          "99th percentile | P(adult) | not-a-chest-X-ray distance |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    notes = []
    for name, files in sets.items():
        decoded = [decode(path) for path in files]
        row = compare({runtime: analyse_many(decoded, loaded) for runtime, loaded in models.items()})
        pair = lambda key: "{:.4f}, {:.4f}".format(*row[key])  # noqa: E731
        print(f"| {name} | {row['films']} | {row['another scope or answer']} | {row['another label']} | "
              f"{pair('P(pneumonia)')} | {pair('P(adult)')} | {pair('distance')} |", flush=True)
        notes.append(f"{name}: largest change of P(pneumonia) by answer: "
                     + ", ".join(f"{population} {gap:.4f}" for population, gap in row["by answer"].items()))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
