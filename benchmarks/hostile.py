"""Hostile uploads against the running app: what each costs, and whether others still get served.

    python benchmarks/hostile.py [--model RUN_FOLDER] [--json OUT]

Starts `python app.py` (the bundled model unless --model), builds the corpus
of tests/hostile_files.py, sends each file once through gradio_client and
prints a table: file, size, outcome, seconds, the server's peak RSS during
the request (and its growth over the server's peak so far), and the peak RSS
of the decoding workers (sampled every 5 ms, so a worker killed within
milliseconds may peak higher than shown; its address space is capped at
PNEUMO_DECODE_MEMORY_MB anyway). Then a good X-ray is sent alone, and again
while two slow hostile uploads hold decoders. Run it on an otherwise idle
machine.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import running_app  # noqa: E402 (needs the path above)
from tests.hostile_files import build_corpus, element_flood_dicom, xray_like  # noqa: E402

REAL_XRAYS = ROOT.parent / "shared" / "data" / "chest_xray" / "val" / "PNEUMONIA"


class MemorySampler:
    """Peak RSS of the server process and of its children (the decoders), sampled in a thread."""

    def __init__(self, pid, every_s=0.005):
        import psutil

        self.server, self.every_s = psutil.Process(pid), every_s
        self.server_mb = self.worker_mb = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def reset(self):
        self.server_mb = self.worker_mb = 0.0

    def stop(self):
        self._stop.set()

    def _run(self):
        while not self._stop.wait(self.every_s):
            try:
                self.server_mb = max(self.server_mb, self.server.memory_info().rss / 2**20)
                for child in self.server.children(recursive=True):
                    try:
                        self.worker_mb = max(self.worker_mb, child.memory_info().rss / 2**20)
                    except Exception:  # it ended between listing and reading
                        pass
            except Exception:
                pass


def vmhwm_mb(pid) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def call(client, path):
    """(outcome, seconds) of one /predict call."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    started = time.perf_counter()
    try:
        result, _ = client.predict(handle_file(path), api_name="/predict")
        outcome = f"answered ({result['scope']}{', ' + result['label'] if result['label'] else ''})"
    except AppError as error:
        outcome = f"refused: {str(error)[:90]}"
    return outcome, time.perf_counter() - started


def good_xray(folder: Path) -> Path:
    real = sorted(REAL_XRAYS.glob("*.jpeg"))
    if real:
        return real[0]
    from PIL import Image

    path = folder / "good.png"
    Image.fromarray(xray_like(1024, 1024)).save(path)
    return path


def bench_corpus(app, client, corpus, sampler):
    rows = []
    for name, case in corpus.items():
        before = vmhwm_mb(app.pid)
        sampler.reset()
        outcome, seconds = call(client, case.path)
        time.sleep(0.05)  # one more sample after the answer
        rows.append({"file": name, "size_mb": case.path.stat().st_size / 2**20, "outcome": outcome,
                     "seconds": seconds, "server_peak_mb": sampler.server_mb,
                     "server_growth_mb": max(0.0, vmhwm_mb(app.pid) - before), "worker_peak_mb": sampler.worker_mb})
    return rows


def bench_in_flight(app, folder, good):
    from gradio_client import Client

    slow = []
    for index, elements in enumerate((2_600_000, 2_590_000)):
        slow.append(folder / f"slow-{index}.dcm")
        slow[-1].write_bytes(element_flood_dicom(elements))
    clients = [Client(app.url, verbose=False, download_files=str(folder)) for _ in range(3)]
    alone = sorted(call(clients[2], good)[1] for _ in range(5))[2]
    with ThreadPoolExecutor(2) as pool:
        hostile = [pool.submit(call, c, path) for c, path in zip(clients, slow)]
        deadline = time.monotonic() + 120
        while not all(list(app.temp_dir.rglob(p.name)) or f.done() for p, f in zip(slow, hostile)):
            if time.monotonic() > deadline:
                raise RuntimeError("the hostile uploads never arrived")
            time.sleep(0.05)
        outcome, during = call(clients[2], good)
        still_running = sum(not f.done() for f in hostile)
        hostile_results = [f.result() for f in hostile]
    return {"good_alone_s": alone, "good_during_s": during, "good_outcome": outcome,
            "hostile_still_running_when_good_answered": still_running,
            "hostile": [{"outcome": o, "seconds": s} for o, s in hostile_results]}


def print_tables(rows, flight):
    print("| file | size | outcome | seconds | server peak RSS (growth) | worker peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['file']} | {r['size_mb']:.2f} MB | {r['outcome']} | {r['seconds']:.2f} | "
              f"{r['server_peak_mb']:.0f} MB (+{r['server_growth_mb']:.0f}) | {r['worker_peak_mb']:.0f} MB |")
    print()
    print(f"good X-ray alone: {flight['good_alone_s']:.2f} s (median of 5); while two slow hostile uploads "
          f"were in flight: {flight['good_during_s']:.2f} s, {flight['good_outcome']}; hostile ones still "
          f"running when it was answered: {flight['hostile_still_running_when_good_answered']} of 2; "
          "they ended: " + "; ".join(f"{h['outcome'][:60]} after {h['seconds']:.1f} s" for h in flight["hostile"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder to serve (default: the app's own choice)")
    parser.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="pneumo-hostile-") as tmp:
        folder = Path(tmp)
        corpus = build_corpus(folder / "corpus")
        with running_app(args.model, folder / "app") as app:
            client = Client(app.url, verbose=False, download_files=str(folder / "downloads"))
            call(client, good_xray(folder))  # warm up
            sampler = MemorySampler(app.pid)
            rows = bench_corpus(app, client, corpus, sampler)
            flight = bench_in_flight(app, folder, good_xray(folder))
            sampler.stop()
    print_tables(rows, flight)
    if args.json:
        Path(args.json).write_text(json.dumps({"corpus": rows, "in_flight": flight}, indent=2))


if __name__ == "__main__":
    main()
