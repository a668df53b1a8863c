"""Two checkouts of this repository served in turn on one machine: did a change of code make serving cheaper?

    python benchmarks/checkouts.py BEFORE_DIR [AFTER_DIR] [--rounds 4] [--images DIR] [--json OUT]

`benchmarks/serving.py --baseline` serves two model folders with one checkout's code; this serves two
checkouts (`git worktree add /tmp/before COMMIT` makes one; AFTER_DIR defaults to this one), each with
its own bundled model and the default runtime. Each round serves both in turn, the order alternating so
that a drift in the machine's load falls on both:

- the app (serving.py's app round: `python app.py` from that checkout): cold start to the first
  /predict answered, then 16 clients x 5 requests: requests/s, the CPU per request of the server (its
  decoding workers included) and of the clients, the server's peak RSS;
- in a fresh process of that checkout: pneumo.analysis.analyse with the heatmap, p50 over 48 `val/`
  films, and over 30 runs of examples/adult.jpeg (an adult's film, as far as that checkout routes it).

Prints each figure's median over the rounds, its range, and after / before. Run it on an otherwise idle
machine: the 16 clients share its cores with the server.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import DEFAULT_IMAGES, bench_app, image_files  # noqa: E402 (needs the path above)

CLIENTS, PER_CLIENT = 16, 5
# Run by each checkout's own code (cwd and PYTHONPATH): analyse's p50 for a child's film and an adult's.
IN_PROCESS = r'''
import json, statistics, sys, time
from pathlib import Path
from pneumo.analysis import analyse
from pneumo.inputs.decode import decode
from pneumo.model.loading import get_model
loaded = get_model()
children = [decode(p).image for p in sys.argv[1:]]
adult = decode("examples/adult.jpeg").image
def p50(images, runs):
    for image in images[:3]:
        analyse(image, loaded)  # warm: the first films import and allocate
    times = []
    for i in range(runs):
        start = time.perf_counter()
        analyse(images[i % len(images)], loaded)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
print(json.dumps({"child_ms": p50(children, 48), "adult_ms": p50([adult], 30)}))
'''
ROWS = (("cold_start_s", "cold start (s)"), ("requests_per_s", f"{CLIENTS} clients: requests/s"),
        ("server_cpu_ms", "CPU per request: the server (ms)"), ("client_cpu_ms", "CPU per request: the clients (ms)"),
        ("peak_rss_mb", "peak RSS of the server (MB)"), ("child_ms", "a child's film: analyse, p50 (ms)"),
        ("adult_ms", "an adult's film: analyse, p50 (ms)"), ("load_1min", "1-minute load average at the start"))


def main(argv=None):
    args = parse_args(argv)
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    roots = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="pneumo-checkouts-") as tmp:
        files = image_files(args.images, Path(tmp) / "images", need=CLIENTS * PER_CLIENT + 8)
        for round_ in range(args.rounds):
            for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                rows.append({"round": round_, "checkout": name, **measure(roots[name], files, Path(tmp))})
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkouts": {k: str(v) for k, v in roots.items()}, "rounds": rows}, indent=1))
    print_table(rows)


def measure(root, files, tmp) -> dict:
    """One checkout, once: its app under load, then analyse in a process of its own."""
    load = os.getloadavg()[0]
    app = bench_app(root / "pneumo" / "bundled_model", files, tmp,
                    SimpleNamespace(requests=1, requests_per_client=PER_CLIENT), "auto", clients=(CLIENTS,), root=root)
    rounds = app[f"clients_{CLIENTS}"]
    children = [str(f) for f in files[::max(1, len(files) // 16)][:16]]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, *children], cwd=root, env=env,
                          capture_output=True, text=True, check=True)
    return {"load_1min": load, "cold_start_s": app["cold_start_s"], "requests_per_s": rounds["throughput_rps"],
            "errors": len(rounds["errors"]), "server_cpu_ms": rounds["cpu_ms_per_request"]["server"],
            "client_cpu_ms": rounds["cpu_ms_per_request"]["clients"], "peak_rss_mb": app["peak_rss_mb"],
            **json.loads(done.stdout.strip().splitlines()[-1])}


def print_table(rows):
    print(f"\n{'':40s}  {'before':>22s}  {'after':>22s}  after / before")
    for key, words in ROWS:
        before, after = ([row[key] for row in rows if row["checkout"] == name] for name in ("before", "after"))
        cells = [f"{statistics.median(v):.3g} [{min(v):.3g}-{max(v):.3g}]" for v in (before, after)]
        ratio = statistics.median(after) / statistics.median(before) if key != "load_1min" else None
        print(f"{words:40s}  {cells[0]:>22s}  {cells[1]:>22s}  {'' if ratio is None else f'{ratio:.2f}x'}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="a checkout of this repository (e.g. made by `git worktree add`)")
    p.add_argument("after", nargs="?", default=str(ROOT), help="another one (default: this checkout)")
    p.add_argument("--rounds", type=int, default=4, help="rounds, each serving both checkouts in turn")
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="X-rays for the clients and the children's p50")
    p.add_argument("--json", help="also write every round's figures here")
    return p.parse_args(argv)


if __name__ == "__main__":
    main()
