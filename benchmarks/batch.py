"""Archive runs: images/s of each way to screen a folder, and the cost of resuming.

    python benchmarks/batch.py [--images DIR] [--count N] [--repeat R] [--no-ray] [--upscale PX]

Each row times the whole command, start-up and model load included, on the
same N files (default: the first 304 of ../shared/data/chest_xray/val, the
real X-rays; synthetic ones when they are absent), writing to a fresh file:

  one process           `pneumo predict --json FILES > /dev/null` (one sandboxed decoder, no --out)
  local, 1 / 2 workers  `pneumo predict DIR --out F.jsonl --workers 1|2`
  ray, local one-node   `pneumo predict DIR --out F.jsonl --engine ray` (the command starts Ray)
  ray, two nodes        the same with --ray-address on a ray.cluster_utils.Cluster of two
                        1-CPU nodes on this machine, started beforehand (as an existing cluster)

Then resuming: a rerun of a finished run (nothing left to screen), and
reading an output of 100,000 rows back, the work a resume does first.
--upscale PX re-saves each film as a JPEG PX pixels on its longer side (the
dataset's films are 224 px; a hospital's exports are 2000-3000 px, where
decoding costs more than the model). With --repeat R each row is the best of R runs (the machine may be shared:
the load average is printed with every row).
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from pneumo.batch.output import open_output  # noqa: E402 (needs the path above)
from tests.conftest import synthetic_xray  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "chest_xray" / "val"


def main(argv=None):
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pneumo-batch-bench-"))
    try:
        folder = gather(args, work / "films")
        count = len(list(folder.iterdir()))
        print(machine())
        size = f", re-saved as {args.upscale} px JPEGs" if args.upscale else ""
        print(f"{count} files from {args.images if args.images.is_dir() else 'synthetic images'}{size}\n")
        print("| way | images/s | seconds | load average (1 min) before |")
        print("| --- | --- | --- | --- |")
        baseline = row("one process: `pneumo predict --json`", args.repeat, count,
                       lambda: command("--json", *sorted(map(str, folder.iterdir())), quiet_stdout=True))
        for workers in (1, 2):
            rate = row(f"local engine, {workers} worker{'s' * (workers > 1)}", args.repeat, count,
                       lambda: command(folder, "--out", fresh(work, "local.jsonl"), "--workers", workers))
            print(f"|   (× {rate / baseline:.2f} one process) | | | |")
        if not args.no_ray and importlib.util.find_spec("ray"):
            row("ray, local one-node (started by the command), 2 actors", args.repeat, count,
                lambda: command(folder, "--out", fresh(work, "ray.jsonl"), "--engine", "ray", "--workers", 2))
            two_nodes(args, work, folder, count)
        resuming(work, folder, count)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def two_nodes(args, work, folder, count):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        row("ray, two 1-CPU nodes (ray.cluster_utils.Cluster, already running), 2 actors", args.repeat, count,
            lambda: command(folder, "--out", fresh(work, "ray2.jsonl"), "--engine", "ray", "--workers", 2,
                            "--ray-address", cluster.address))
    finally:
        cluster.shutdown()


def resuming(work, folder, count):
    out = fresh(work, "done.jsonl")
    command(folder, "--out", out)
    seconds = timed(lambda: command(folder, "--out", out))
    print(f"\nresume a finished run of {count} files (start-up, list, read the output, screen nothing): "
          f"{seconds:.2f} s")
    big = work / "big.jsonl"
    row_text = json.dumps(json.loads(out.read_text().splitlines()[0]))
    with open(big, "w") as file:
        for i in range(100_000):
            file.write(row_text.replace(json.dumps(json.loads(row_text)["path"]), json.dumps(f"/archive/{i}.dcm"))
                       + "\n")
    start = time.perf_counter()
    done = open_output(big).done
    print(f"read back an output of {len(done):,} rows (what a resume does first): "
          f"{time.perf_counter() - start:.2f} s, {big.stat().st_size / 1e6:.0f} MB")
    assert len(done) == 100_000


def row(name, repeat, count, run) -> float:
    load = os.getloadavg()[0]
    seconds = min(timed(run) for _ in range(repeat))
    print(f"| {name} | {count / seconds:.1f} | {seconds:.1f} | {load:.1f} |", flush=True)
    return count / seconds


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def command(*args, quiet_stdout=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}  # the bundled model
    env.update(HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "pneumo", "predict", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL if quiet_stdout else subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(f"pneumo predict failed: {result.stderr[-2000:]}")


def fresh(work, name) -> Path:
    path = work / name
    path.unlink(missing_ok=True)
    return path


def gather(args, folder) -> Path:
    folder.mkdir(parents=True)
    if args.images.is_dir():
        files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        for i, path in enumerate(files[:args.count]):
            if args.upscale:
                with Image.open(path) as film:
                    scale = args.upscale / max(film.size)
                    film.resize((round(film.width * scale), round(film.height * scale)), Image.Resampling.BICUBIC
                                ).save(folder / f"{i:06d}.jpeg", quality=92)
            else:
                os.symlink(path, folder / f"{i:06d}{path.suffix}")
    else:
        for i in range(args.count):
            synthetic_xray(["normal", "bacteria", "virus"][i % 3], seed=i, size=1024).save(folder / f"{i:06d}.jpeg")
    return folder


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; load average {os.getloadavg()}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--count", type=int, default=304)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--upscale", type=int, metavar="PX", help="re-save the films this large (longer side)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
