"""Serving benchmarks: how fast and how big the served model is on this machine,
for the Keras runtime and the default one side by side (pneumo/model/runtime.py).

    python benchmarks/serving.py [--model RUN_FOLDER] [--images DIR] [--runtimes keras,auto] [--sweep]
                                 [--breakdown-requests N] [--baseline RUN_FOLDER] [--json OUT]

Prints the machine, then tables for
  1. the app, once per runtime (PNEUMO_RUNTIME): cold start (`python app.py`
     to the first answered /predict), end-to-end latency through
     gradio_client with the heatmap at 1, 8 and 16 concurrent clients
     (p50/p95, errors), and the server's peak RSS;
  2. in process, per runtime: one X-ray through pneumo.analysis.analyse with
     the heatmap (p50/p95; decoded image in, result out), the model's pass
     alone, and batch throughput at batch 16 without heatmaps;
  3. where one request's time goes (default runtime, one client, --breakdown-requests
     sequential requests; 0 skips it): the client's steps (upload, joining the queue, waiting
     for the answer, downloading the heatmap) timed around gradio_client's own methods in this
     process; Gradio's phases (queue wait, pre/postprocess, the handler) from the server's
     GRADIO_PROFILING traces; the handler's steps (sandboxed decode, pneumo.analysis.analyse,
     drawing the overlay, writing it) timed in the server by wrappers that only this benchmark
     installs (they record milliseconds, never a file's name or content). Once with
     gradio_client's defaults, once with ssl_verify=False (plain http: nothing to verify, but
     httpx builds an SSL context for every connection all the same).
--sweep also serves 8 clients at queue concurrency limits 1, 2 and 4 (default runtime).
--baseline also serves another run folder (default runtime), in the same run, and prints
the budget side by side: a child's and an adult's film, cold start, peak RSS, requests/s
at 16 clients, the client's p50 above the in-process time, and the ratios.

Run it on an otherwise idle machine: the clients share its cores with the
server. Images: the real X-rays of ../shared/data/chest_xray/val when there,
else synthetic ones; each concurrent request sends a different file.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumo.model.run_folder import CONFIG, FLOAT_ONNX, INT8_ONNX, KERAS_MODEL  # noqa: E402 (needs the path above)
from tests.processes import stop  # noqa: E402

DEFAULT_MODEL = ROOT / "pneumo" / "bundled_model"
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "chest_xray" / "val"
ADULT_EXAMPLE = ROOT / "examples" / "adult.jpeg"  # routed to the adult answer, when the model has one
START_TIMEOUT_S = 600
# `python app.py`, except that the queue's concurrency limit comes from argv[1].
LAUNCH_WITH_LIMIT = """
import sys
import app
from pneumo.inputs.decode import MAX_FILE_BYTES
app.demo.queue(default_concurrency_limit=int(sys.argv[1]), max_size=32)
app.demo.launch(max_file_size=MAX_FILE_BYTES, prevent_thread_lock=True)
app.demo.block_thread()
"""
# `python app.py` with timers around the handler's steps: one line "STEP MS" each, to the file argv[1].
LAUNCH_TIMED = """
import functools, sys, time
import app
from pneumo.inputs.decode import MAX_FILE_BYTES
steps = open(sys.argv[1], "a", buffering=1)
def timed(step, call):
    @functools.wraps(call)
    def timed_call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            steps.write(f"{step} {(time.perf_counter() - start) * 1000:.3f}\\n")
    return timed_call
app.DECODERS.decode = timed("decode", app.DECODERS.decode)
app.analyse = timed("analyse", app.analyse)
app.picture = timed("picture", app.picture)
heatmap = next(b for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "heatmap")
heatmap.postprocess = timed("write_heatmap", heatmap.postprocess)
app.SWEEPER.start()
app.demo.launch(max_file_size=MAX_FILE_BYTES, prevent_thread_lock=True, run_history=False)
app.demo.block_thread()
"""


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = Path(args.model).resolve()
    results = {"machine": machine(), "model": str(model)}
    print_machine(results["machine"], model)
    with tempfile.TemporaryDirectory(prefix="pneumo-bench-") as tmp:
        files = image_files(args.images, Path(tmp) / "images", need=max(64, 16 * args.requests_per_client + 8))
        print(f"images: {len(files)} files from {files[0].parent}\n")
        # The servers first, while this process has not loaded TensorFlow yet.
        results["app"] = {runtime: bench_app(model, files, Path(tmp), args, runtime) for runtime in args.runtimes}
        print_app(results["app"])
        if args.sweep:
            results["sweep"] = {limit: bench_app(model, files, Path(tmp), args, "auto", limit=limit, clients=(8,))
                                for limit in (1, 2, 4)}
            print_sweep(results["sweep"])
        if args.breakdown_requests:
            results["breakdown"] = bench_breakdown(model, files, Path(tmp), args)
            print_breakdown(results["breakdown"])
        if args.baseline:  # the same machine, the same images, right after: the budget's ratios mean something
            baseline = Path(args.baseline).resolve()
            results["baseline"] = {"model": str(baseline), "app": bench_app(baseline, files, Path(tmp), args, "auto")}
        results["in_process"] = {runtime: bench_in_process(model, files, args, runtime) for runtime in args.runtimes}
        print_in_process(results["in_process"])
        if args.baseline:
            results["baseline"]["in_process"] = bench_in_process(baseline, files, args, "auto")
            print_budget(results, model, baseline)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nresults written to {args.json}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="run folder to serve (default: the bundled model)")
    p.add_argument("--images", default=str(DEFAULT_IMAGES),
                   help="folder of X-rays (searched recursively); synthetic images when missing")
    p.add_argument("--runs", type=int, default=40, help="single-image calls per runtime")
    p.add_argument("--batch", type=int, default=16, help="batch size for the throughput row")
    p.add_argument("--batches", type=int, default=6, help="batches timed per runtime")
    p.add_argument("--requests", type=int, default=20, help="sequential requests of the single client")
    p.add_argument("--requests-per-client", type=int, default=5, help="requests of each of the 8 and 16 clients")
    p.add_argument("--runtimes", type=lambda v: v.split(","), default=["keras", "auto"],
                   help="PNEUMO_RUNTIME values to compare, comma-separated (default keras,auto)")
    p.add_argument("--sweep", action="store_true", help="also try queue concurrency limits 1, 2 and 4")
    p.add_argument("--breakdown-requests", type=int, default=20,
                   help="sequential requests timed step by step, per client setting (0: no breakdown)")
    p.add_argument("--baseline", metavar="RUN_FOLDER",
                   help="also serve this run folder (default runtime) and print the budget against it")
    p.add_argument("--json", metavar="OUT", help="also write every number to this JSON file")
    return p.parse_args(argv)


# ---------------------------------------------------------------- machine


def machine():
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    # Versions from the installed packages' metadata: importing Keras here
    # would load TensorFlow into this process before the servers are measured.
    versions = {module: _version(*names) for module, names in (("tensorflow", ("tensorflow-cpu", "tensorflow")),
                                                               ("keras", ("keras",)), ("onnxruntime", ("onnxruntime",)),
                                                               ("gradio", ("gradio",)))}
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "usable_cores": usable, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "os": platform.platform(), **versions}


def _version(*names):
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def print_machine(m, model):
    print(f"machine: {m['cpu']}; {m['usable_cores']} usable cores ({m['physical_cores']} physical, "
          f"{m['logical_cores']} logical), {m['memory_gb']} GB RAM; {m['os']}")
    print(f"software: Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
          f"onnxruntime {m['onnxruntime']}, Gradio {m['gradio']}")
    config = json.loads((model / CONFIG).read_text()) if (model / CONFIG).is_file() else {}
    sizes = ", ".join(f"{name} {_mb(model / name) if (model / name).is_file() else 'absent'}"
                      for name in (KERAS_MODEL, INT8_ONNX, FLOAT_ONNX))
    print(f"model: {model} ({config.get('name')}, {config.get('image_size')} px); {sizes}")


def _mb(path):
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size > 1e5 else f"{size / 1e3:.0f} KB"


# ---------------------------------------------------------------- images


def image_files(folder, scratch, need):
    """Real X-rays when `folder` has them, else `need` synthetic ones."""
    folder = Path(folder)
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        if files:
            # Interleave the classes, so that every slice of the list holds both.
            half = len(files) // 2
            return [f for pair in zip(files[:half], files[half:]) for f in pair] + files[2 * half:]
    from tests.conftest import synthetic_xray

    scratch.mkdir(parents=True)
    files = []
    for i in range(need):
        path = scratch / f"synthetic-{i}.png"
        synthetic_xray(("normal", "bacteria", "virus")[i % 3], seed=i, size=1024).save(path)
        files.append(path)
    return files


# ---------------------------------------------------------------- the app


def bench_app(model, files, tmp, args, runtime, limit=None, clients=(1, 8, 16), root=ROOT):
    """Start the app on `runtime` (`root`: the checkout whose app.py serves), time the first answer, then the
    load rounds, each with the CPU per request of the server (its decoding workers included) and of the
    clients (this process); stop it."""
    import psutil
    from gradio_client import handle_file

    port = _free_port()
    workdir = Path(tempfile.mkdtemp(dir=tmp, prefix="app-"))
    env = _server_env(model, runtime, workdir, port)
    command = [sys.executable, "app.py"] if limit is None else [sys.executable, "-c", LAUNCH_WITH_LIMIT, str(limit)]
    url = f"http://127.0.0.1:{port}/"
    log = open(workdir / "app.log", "w")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    server, bench = psutil.Process(process.pid), psutil.Process()  # the clients are this process's threads
    peak = PeakRss(server)
    out = {"concurrency_limit": limit or "app.py's own"}
    try:
        client = _connect(url, process, started, workdir / "app.log")
        out["ready_s"] = time.perf_counter() - started
        result, _ = client.predict(handle_file(files[0]), api_name="/predict")
        out["cold_start_s"] = time.perf_counter() - started
        out["runtime"] = result["model"]["runtime"]
        out["rss_idle_mb"] = _rss_mb(server)
        cursor = 1
        for n in clients:
            per_client = args.requests if n == 1 else args.requests_per_client
            batch = [files[(cursor + i) % len(files)] for i in range(n * per_client)]
            cursor += len(batch)
            server_cpu, client_cpu = _cpu_s(server), _cpu_s(bench, children=False)  # the server is its child
            out[f"clients_{n}"] = _load(url, batch, n, per_client, workdir)
            out[f"clients_{n}"]["cpu_ms_per_request"] = {
                "server": (_cpu_s(server) - server_cpu) / len(batch) * 1000,
                "clients": (_cpu_s(bench, children=False) - client_cpu) / len(batch) * 1000}
        out["rss_after_mb"] = _rss_mb(server)
        out["peak_rss_mb"] = max(peak.stop(), _hwm_mb(server) or 0)
    finally:
        peak.stop()
        stop(process, timeout=30)
        log.close()
    return out


def _cpu_s(process, children=True) -> float:
    """The CPU seconds (user and system) a process, and its live children unless told not, have used."""
    return sum(sum(p.cpu_times()[:2]) for p in (process, *(process.children(recursive=True) if children else ())))


def _server_env(model, runtime, workdir, port) -> dict:
    """The environment of an app served for a benchmark: this model and runtime, on 127.0.0.1:`port`,
    its files under `workdir`; never the Hub, a share link or MCP."""
    env = {**os.environ, "PNEUMO_MODEL_PATH": str(model), "PNEUMO_RUNTIME": runtime,
           "GRADIO_TEMP_DIR": str(workdir / "gradio"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port)}
    for name in ("PNEUMO_MODEL_REPO", "GRADIO_SHARE", "GRADIO_MCP_SERVER"):
        env.pop(name, None)
    return env


def _connect(url, process, started, log):
    from gradio_client import Client

    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.perf_counter() - started > START_TIMEOUT_S:
            raise RuntimeError(f"app.py did not answer in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        try:
            return Client(url, verbose=False, download_files=False)
        except Exception:
            time.sleep(0.2)


def _load(url, files, clients, per_client, workdir):
    """`clients` clients at once, each sending `per_client` files in turn: latencies and throughput."""
    from gradio_client import Client, handle_file

    sessions = [Client(url, verbose=False, download_files=str(workdir / f"downloads{i}")) for i in range(clients)]
    latencies, errors = [], []

    def run(i):
        for j in range(per_client):
            start = time.perf_counter()
            try:
                sessions[i].predict(handle_file(files[i * per_client + j]), api_name="/predict")
                latencies.append(time.perf_counter() - start)
            except Exception as error:  # counted, not fatal: a benchmark reports what happened
                errors.append(f"{type(error).__name__}: {error}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    wall = time.perf_counter() - started
    return {**_stats(latencies), "requests": clients * per_client, "errors": errors,
            "throughput_rps": len(latencies) / wall}


class PeakRss:
    """Samples the process's RSS (children included) every 50 ms until stopped."""

    def __init__(self, process):
        self.peak, self._process, self._stop = 0.0, process, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, _rss_mb(self._process))
            except Exception:
                return

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def _rss_mb(process):
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def _hwm_mb(process):
    """The kernel's own peak RSS of the process (Linux), in MB."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_app(apps):
    print("== The app: python app.py, called through gradio_client (heatmap included) ==")
    names = [f"{runtime} ({app['runtime']})" if runtime != app["runtime"] else runtime for runtime, app in apps.items()]
    rows = [["start to HTTP ready", *[f"{a['ready_s']:.1f} s" for a in apps.values()]],
            ["cold start: start to first /predict answered", *[f"{a['cold_start_s']:.1f} s" for a in apps.values()]],
            ["RSS after the first answer", *[f"{a['rss_idle_mb']:.0f} MB" for a in apps.values()]],
            ["RSS after the load below", *[f"{a['rss_after_mb']:.0f} MB" for a in apps.values()]],
            ["peak RSS", *[f"{a['peak_rss_mb']:.0f} MB" for a in apps.values()]]]
    for n in (1, 8, 16):
        if all(f"clients_{n}" in a for a in apps.values()):
            rows.append([f"{n} client(s): p50 / p95", *[_latency(a[f"clients_{n}"]) for a in apps.values()]])
            rows.append([f"{n} client(s): requests/s, errors of requests",
                         *[_throughput(a[f"clients_{n}"]) for a in apps.values()]])
    _table(["", *names], rows)
    print()


def _latency(r):
    return f"{_ms(r['p50'])} / {_ms(r['p95'])}"


def _throughput(r):
    return f"{r['throughput_rps']:.1f}, {len(r['errors'])} of {r['requests']}"


def print_sweep(sweep):
    print("== Queue concurrency limit, 8 clients ==")
    _table(["limit", "requests", "p50", "p95", "mean", "throughput", "errors", "peak RSS"],
           [[str(limit), *_load_row(8, r["clients_8"])[1:], f"{r['peak_rss_mb']:.0f} MB"]
            for limit, r in sweep.items()])
    print()


def _load_row(n, r):
    return [str(n), str(r["requests"]), _ms(r["p50"]), _ms(r["p95"]), _ms(r["mean"]),
            f"{r['throughput_rps']:.2f} req/s", str(len(r["errors"]))]


# ---------------------------------------------------------------- where one request's time goes

# The client's steps: gradio_client's own methods, timed in this process while the breakdown runs.
CLIENT_STEPS = (("Endpoint", "_upload_file", "upload"), ("Client", "send_data", "join"),
                ("Endpoint", "_sse_fn_v1plus", "wait"), ("Endpoint", "_download_file", "download"))
# The breakdown's rows: (key, words, depth). Keys of the server's phases come from Gradio's
# GRADIO_PROFILING traces, the handler's steps from LAUNCH_TIMED's wrappers, the rest are differences.
BREAKDOWN_ROWS = (
    ("round_trip", "client round trip (gradio_client .predict)", 0),
    ("upload", "upload the file (POST /gradio_api/upload)", 1),
    ("join", "join the queue (POST /gradio_api/queue/join)", 1),
    ("wait", "wait for the answer (the SSE stream)", 1),
    ("queue_wait", "queue wait (server)", 2),
    ("preprocess", "Gradio preprocess: the upload's checks (server)", 2),
    ("fn_call", "the handler, app.predict (server)", 2),
    ("decode", "decode in the sandboxed worker", 3),
    ("analyse", "pneumo.analysis.analyse", 3),
    ("picture", "draw the overlay (pneumo.overlay.picture)", 3),
    ("handler_rest", "the rest: path checks, deleting the upload, as_dict, thread hand-off", 3),
    ("postprocess", "Gradio postprocess (server)", 2),
    ("write_heatmap", "encode and write the heatmap picture", 3),
    ("delivery", "delivery: SSE to the client, its 50 ms polling", 2),
    ("download", "download the heatmap (GET /gradio_api/file=)", 1),
    ("client_rest", "the client's own work between the steps", 1),
    ("overhead", "round trip minus analyse (the server's, same requests)", 0),
)


def bench_breakdown(model, files, tmp, args, runtime="auto"):
    """One client, sequential requests, each step timed; once per client setting. Per request, then p50."""
    from gradio_client import Client

    port = _free_port()
    workdir = Path(tempfile.mkdtemp(dir=tmp, prefix="breakdown-"))
    steps_file = workdir / "steps.txt"
    steps_file.touch()
    env = {**_server_env(model, runtime, workdir, port), "GRADIO_PROFILING": "1"}
    url = f"http://127.0.0.1:{port}/"
    log = open(workdir / "app.log", "w")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", LAUNCH_TIMED, str(steps_file)], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    out = {"runtime": runtime, "requests": args.breakdown_requests, "clients": {}}
    cursor = 0
    try:
        _connect(url, process, started, workdir / "app.log").close()
        for name, options in (("gradio_client defaults", {}), ("ssl_verify=False", {"ssl_verify": False})):
            client = Client(url, verbose=False, download_files=str(workdir / "downloads"), **options)
            batch = [files[(cursor + i) % len(files)] for i in range(3 + args.breakdown_requests)]
            cursor += len(batch)
            out["clients"][name] = _breakdown_round(client, url, batch, steps_file, warmup=3)
            client.close()
    finally:
        stop(process, timeout=30)
        log.close()
    return out


def _breakdown_round(client, url, batch, steps_file, warmup):
    import httpx
    from gradio_client import handle_file

    for path in batch[:warmup]:
        client.predict(handle_file(path), api_name="/predict")
    httpx.post(url + "gradio_api/profiling/clear").raise_for_status()
    lines_before = len(steps_file.read_text().splitlines())
    client_steps, round_trips = {}, []
    with _timing(client_steps):
        for path in batch[warmup:]:
            start = time.perf_counter()
            client.predict(handle_file(path), api_name="/predict")
            round_trips.append(time.perf_counter() - start)
    traces = httpx.get(url + "gradio_api/profiling/traces").json()
    upload_route = httpx.get(url + "gradio_api/profiling/summary").json().get("upload", {}).get("p50")
    server_steps = {}
    for line in steps_file.read_text().splitlines()[lines_before:]:
        step, ms = line.split()
        server_steps.setdefault(step, []).append(float(ms) / 1000)
    by_event = {t["event_id"]: t for t in traces if t["fn_name"] != "gradio_file_upload"}
    events = client_steps.pop("event_ids", [])
    phases = {phase: [by_event[e][f"{phase}_ms"] / 1000 for e in events if e in by_event]
              for phase in ("queue_wait", "preprocess", "fn_call", "postprocess", "total")}
    per_request = {"round_trip": round_trips, **client_steps, **phases, **server_steps}
    n = len(round_trips)
    if all(len(per_request.get(k, ())) == n for k in ("upload", "join", "wait", "download")):
        per_request["client_rest"] = [t - u - j - w - d for t, u, j, w, d in zip(
            round_trips, *(per_request[k] for k in ("upload", "join", "wait", "download")))]
    if all(len(per_request.get(k, ())) == n for k in ("wait", "queue_wait", "total")):
        per_request["delivery"] = [w - q - t for w, q, t in zip(*(per_request[k] for k in ("wait", "queue_wait",
                                                                                               "total")))]
    if all(len(per_request.get(k, ())) == n for k in ("fn_call", "decode", "analyse", "picture")):
        per_request["handler_rest"] = [f - d - a - p for f, d, a, p in zip(
            *(per_request[k] for k in ("fn_call", "decode", "analyse", "picture")))]
    if len(per_request.get("analyse", ())) == n:
        per_request["overhead"] = [t - a for t, a in zip(round_trips, per_request["analyse"])]
    stats = {key: _stats(values) for key, values in per_request.items() if len(values) == n}
    if upload_route is not None:
        stats["upload_route"] = {"p50": upload_route / 1000}
    return stats


class _timing:
    """Wraps gradio_client's step methods (CLIENT_STEPS) to append each call's seconds to `into[step]`,
    and the queue's event ids to `into["event_ids"]`; puts the methods back on exit."""

    def __init__(self, into):
        self.into, self.saved = into, []

    def __enter__(self):
        import gradio_client.client as gc

        for owner, method, step in CLIENT_STEPS:
            cls = getattr(gc, owner)
            original = getattr(cls, method, None)
            if original is None:  # another gradio_client: that row stays empty
                continue
            self.saved.append((cls, method, original))
            setattr(cls, method, self._timed(original, step))
        return self

    def _timed(self, original, step):
        into = self.into

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = original(*args, **kwargs)
            finally:
                into.setdefault(step, []).append(time.perf_counter() - start)
            if step == "join":
                into.setdefault("event_ids", []).append(result)
            return result

        return timed

    def __exit__(self, *exc):
        for cls, method, original in self.saved:
            setattr(cls, method, original)


def print_breakdown(breakdown):
    clients = breakdown["clients"]
    print(f"== Where one request's time goes: 1 client, {breakdown['requests']} sequential requests each, "
          f"{breakdown['runtime']} runtime; p50 of each step (an indented row is part of the one above it; "
          "rest, delivery and overhead are differences taken per request) ==")
    rows = []
    for key, words, depth in BREAKDOWN_ROWS:
        if not any(key in c for c in clients.values()):
            continue
        rows.append(["  " * depth + words, *[_ms(c[key]["p50"]) if key in c else "-" for c in clients.values()]])
        if key == "upload":
            rows.append(["  " * 2 + "of which the server's upload route",
                         *[_ms(c["upload_route"]["p50"]) if "upload_route" in c else "-" for c in clients.values()]])
    _table(["step", *clients], rows)
    print()


# ---------------------------------------------------------------- in process


def bench_in_process(model, files, args, runtime):
    """One runtime in this process: analyse with the heatmap, the model's pass alone, batch throughput."""
    from pneumo.analysis import analyse, analyse_many
    from pneumo.inputs.decode import decode
    from pneumo.model.loading import load_model
    from pneumo.model.predict import adult_outputs, model_outputs
    from pneumo.model.preprocess import preprocess

    loaded = load_model(model, runtime=runtime)
    images = [decode(path).image for path in files[:max(args.batch, 16)]]
    size = loaded.config["image_size"]
    inputs = [preprocess(image, size) for image in images]
    pick = lambda i: images[i % len(images)]  # noqa: E731
    out = {"runtime": loaded.identity["runtime"]}
    out["analyse with heatmap"] = time_calls(lambda i: analyse(pick(i), loaded, with_heatmap=True), args.runs)
    out["analyse without heatmap"] = time_calls(lambda i: analyse(pick(i), loaded, with_heatmap=False), args.runs)
    out["model pass alone"] = time_calls(lambda i: loaded.runtime(inputs[i % len(inputs)]), args.runs)
    out["model pass + heatmap"] = time_calls(lambda i: model_outputs(loaded, inputs[i % len(inputs)], True), args.runs)
    if loaded.adult_head is not None:  # an adult film: the children's pass, then the adult answer's
        adult = decode(ADULT_EXAMPLE).image
        adult_input = preprocess(adult, size)

        def adult_answer(_):  # a branch continues the pass from its shared maps, a whole trunk makes its own
            outputs = model_outputs(loaded, adult_input, True)
            return adult_outputs(loaded, [adult], outputs.maps, True, outputs.shared)

        out["adult: model pass + adult answer + heatmaps"] = time_calls(adult_answer, args.runs)
        out["adult: analyse with heatmap"] = time_calls(lambda i: analyse(adult, loaded, with_heatmap=True), args.runs)
    batch = images[:args.batch]
    times = time_calls(lambda i: analyse_many(batch, loaded, batch_size=args.batch), args.batches, warmup=1)
    out["batch"] = {"images_per_s": args.batch / times["p50"], **times}
    out["batch_size"] = args.batch
    return out


def time_calls(call, runs, warmup=3):
    for i in range(warmup):
        call(i)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return _stats(times)


def print_in_process(results):
    print("== In process: one decoded X-ray through pneumo.analysis.analyse (preprocessing, scope checks, "
          "calibration included) ==")
    names = [f"{runtime} ({r['runtime']})" if runtime != r["runtime"] else runtime for runtime, r in results.items()]
    rows = [[f"{key}: p50 / p95", *[_latency(r[key]) for r in results.values()]]
            for key in ("model pass + heatmap", "model pass alone", "analyse with heatmap", "analyse without heatmap",
                        "adult: model pass + adult answer + heatmaps", "adult: analyse with heatmap")
            if all(key in r for r in results.values())]
    batch = next(iter(results.values()))["batch_size"]
    rows.append([f"batch of {batch}, no heatmap: images/s", *[f"{r['batch']['images_per_s']:.1f}"
                                                               for r in results.values()]])
    _table(["", *names], rows)


def print_budget(results, model, baseline):
    """The serving budget of `model` against `baseline`, both on the default runtime."""
    ours = {"app": results["app"]["auto"], "in": results["in_process"]["auto"]}
    theirs = {"app": results["baseline"]["app"], "in": results["baseline"]["in_process"]}

    def p50(r, key):
        return r["in"][key]["p50"] if key in r["in"] else float("nan")

    def row(name, a, b, unit, ratio=True):
        return [name, f"{a:.{1 if unit == ' s' else 0}f}{unit}", f"{b:.{1 if unit == ' s' else 0}f}{unit}",
                f"{a / b:.2f}x" if ratio else ""]

    child, adult = "analyse with heatmap", "adult: analyse with heatmap"
    rows = [row("a child's film (in process, p50)", p50(ours, child) * 1e3, p50(theirs, child) * 1e3, " ms"),
            row("an adult's film (in process, p50)", p50(ours, adult) * 1e3, p50(theirs, adult) * 1e3, " ms"),
            ["an adult's film / a child's", f"{p50(ours, adult) / p50(ours, child):.2f}x",
             f"{p50(theirs, adult) / p50(theirs, child):.2f}x", ""],
            row("cold start", ours["app"]["cold_start_s"], theirs["app"]["cold_start_s"], " s"),
            row("peak RSS", ours["app"]["peak_rss_mb"], theirs["app"]["peak_rss_mb"], " MB"),
            row("16 clients: requests/s", ours["app"]["clients_16"]["throughput_rps"],
                theirs["app"]["clients_16"]["throughput_rps"], ""),
            row("1 client: p50 above the in-process time", (ours["app"]["clients_1"]["p50"] - p50(ours, child)) * 1e3,
                (theirs["app"]["clients_1"]["p50"] - p50(theirs, child)) * 1e3, " ms", ratio=False),
            row("model files (.keras, .onnx, .npz, .json)", _folder_mib(model), _folder_mib(baseline), " MiB",
                ratio=False)]
    print(f"\n== The budget: {model.name} against {baseline.name} (default runtime: "
          f"{ours['in']['runtime']} and {theirs['in']['runtime']}) ==")
    _table(["", model.name, baseline.name, "ratio"], rows)


def _folder_mib(folder):
    """The run folder's files that serving reads (model.keras, the ONNX models, the fitted checks), in MiB."""
    return sum(p.stat().st_size for p in Path(folder).iterdir()
               if p.is_file() and p.suffix in (".keras", ".onnx", ".npz", ".json")) / 2**20


# ---------------------------------------------------------------- helpers


def _stats(times):
    if not times:
        return {"p50": float("nan"), "p95": float("nan"), "mean": float("nan"), "n": 0}
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": statistics.median(ordered), "p95": p95, "mean": statistics.fmean(ordered), "n": len(ordered)}


def _ms(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def _table(header, rows):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(row, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    main()
