"""Archive runs: many files to rows in a file, resumable (`pneumo predict --out`).

    pneumo predict SOURCE... --out results.jsonl [--heatmaps DIR] [--engine local|ray] [--workers N]
                             [--ray-address ADDR]

SOURCE: files, folders (walked recursively) or manifests (pneumo/batch/sources.py).
Each file gets one row in --out (pneumo/batch/output.py): its result from
pneumo.analysis, or the reason it could not be read. A rerun with the same
--out screens the files without a row and those whose row is an error (the
error rows go first), so a killed run is continued, and a file mended since,
by running the same command again. The rows of one file come from one model:
a rerun whose model is another is refused, nothing written.

Stopping: SIGTERM or Ctrl-C writes the rows already screened, stops the
workers and ends (exit code 1); the workers also end with this process when
it is killed outright (kill -9: die_with_parent), so no run leaves processes
behind.

Both engines compute a row the same way (pneumo/batch/rows.py): the file is
decoded in a sandboxed worker process (pneumo/inputs/sandbox.py, the app's limits),
then analysed in batches by pneumo.analysis.analyse_many.

    local   this machine: N worker processes (default: one per usable core),
            each with its own model on one thread and its own decoder.
    ray     a Ray cluster (pneumo/batch/ray_engine.py): N actors, the same
            Screener each; rows stream back to --out here.
"""

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter, deque

from pneumo.batch.output import HEATMAP, OutputError, open_output
from pneumo.batch.rows import BATCH, Screener
from pneumo.batch.sources import SourceError, list_sources

EXIT_OK, EXIT_FAILED_FILE, EXIT_SETUP = 0, 1, 2


class OtherModel(Exception):
    """The rows coming back are another model's than the file's; the message names both."""


def run(sources, out, engine="local", workers=None, ray_address=None, stream=None, heatmaps=None) -> int:
    """Screen `sources` into `out`; prints a progress bar (on a terminal) and one summary line to `stream`.
    `heatmaps`: a folder for each verdict's overlay PNG, named in the rows' heatmap_file."""
    stream = stream or sys.stderr
    started = time.monotonic()
    try:
        listed = list_sources(sources)
        output = open_output(out)
        if heatmaps:
            _heatmap_folder(heatmaps, output)
    except (SourceError, OutputError) as error:
        print(f"error: {error}", file=stream)
        return EXIT_SETUP
    failed = {row["path"] for row in output.rows if row["error"]}
    retried = [path for path in listed.files if path in failed]  # a file that failed is tried again
    todo = [path for path in listed.files if path not in output.done or path in failed]
    progress = _progress_bar(len(todo), stream)
    same_model = _SameModel(output.rows, out)
    stop = _Stop()
    new_rows = []

    def write(rows):
        same_model.check(rows)  # before a row of another model reaches the file
        with stop.writing():
            if retried:  # their error rows go once this run's model is known to be the file's
                output.drop(retried)
                retried.clear()
            output.append(rows)
        new_rows.extend(rows)
        progress.update(len(rows))

    try:
        with stop.on_signals():
            if engine == "ray":
                from pneumo.batch.ray_engine import screen_with_ray

                screen_with_ray(todo, write, workers, ray_address, heatmaps)  # default: the cluster's CPUs
            else:
                screen_locally(todo, write, workers or usable_cpus(), heatmaps)
    except KeyboardInterrupt:
        progress.close()
        print(f"{stop.why}: {len(new_rows)} rows written to {out}; "
              "run the same command again to continue", file=stream)
        return EXIT_FAILED_FILE
    except OtherModel as error:
        progress.close()
        print(f"error: {error}", file=stream)
        return EXIT_SETUP
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # the model could not be loaded, Ray failed
        progress.close()
        print(f"error: {error}", file=stream)
        return EXIT_SETUP
    finally:
        output.close()
    progress.close()
    print(summary(output.rows, new_rows, listed.skipped, time.monotonic() - started, out), file=stream)
    return EXIT_FAILED_FILE if any(row["error"] for row in new_rows) else EXIT_OK


def _heatmap_folder(folder, output) -> None:
    if HEATMAP not in output.columns:
        raise OutputError(f"--out {output.path} was written by an older pneumo, without the {HEATMAP} column: "
                          "choose another --out to record the heatmaps' files")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--heatmaps {folder}: the folder cannot be made ({error.strerror})") from None


def model_words(model: dict) -> str:
    """A result's `model` as a person tells it apart: "pneumo-vgg16-128 (sha256 160e7d1832e0, bundled)"."""
    where = model.get("repo") or model.get("source") or "?"
    return f"{model.get('name') or 'unnamed'} (sha256 {str(model.get('sha256'))[:12]}, {where})"


class _SameModel:
    """The rows of one output come from one model: the first row with a model sets it (the file's
    earlier rows, else this run's first), and a row of another (a different model.keras) stops the run."""

    def __init__(self, rows, out):
        self.out = out
        self.model = next((row["model"] for row in rows if row["model"]), None)
        self.earlier = self.model is not None

    def check(self, rows) -> None:
        for row in rows:
            model = row["model"]
            if not model:
                continue
            if self.model is None:
                self.model = model
            elif model.get("sha256") != self.model.get("sha256"):
                whose = "its rows come from" if self.earlier else "this run started with"
                raise OtherModel(f"{self.out}: {whose} the model {model_words(self.model)}, but this run serves "
                                 f"{model_words(model)}; one file must not mix two models' answers, so nothing more "
                                 "was written. Choose another --out for this model, or serve the file's model "
                                 "(PNEUMO_MODEL_PATH, PNEUMO_MODEL_REPO).")


class _Stop:
    """SIGTERM and SIGINT (Ctrl-C) end a run as KeyboardInterrupt, but never in the middle of an append:
    a signal that comes while rows are being written takes effect once they are."""

    def __init__(self):
        self.why = "interrupted"
        self.requested = False
        self._writing = False
        self._pending = False

    @contextlib.contextmanager
    def on_signals(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {number: signal.signal(number, self._handle) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextlib.contextmanager
    def writing(self):
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt

    def _handle(self, number, frame):
        if self.requested:  # stopping already: a second signal must not cut the stop short
            return
        self.requested = True
        self.why = "stopped by SIGTERM" if number == signal.SIGTERM else "interrupted"
        if self._writing:
            self._pending = True
        else:
            raise KeyboardInterrupt


def screen_locally(paths, write, workers, heatmaps=None) -> None:
    """`workers` processes, each with its own model and sandboxed decoder, screen a
    batch at a time; the rows come back here in the order given.

    Why whole pipelines and not one model fed by many decoders: ONNX Runtime
    splits every layer over its threads and waits for the slowest, so on a
    busy machine a decoder that takes one of its cores stalls the whole model.
    One thread per process, each with its own core, never waits for another.

    Stopped (KeyboardInterrupt: SIGTERM or Ctrl-C), the batches already screened are
    written, the workers are ended, and the interrupt goes on to the caller."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    batches = iter([paths[start:start + BATCH] for start in range(0, len(paths), BATCH)])
    _start_resource_tracker()
    # spawn: a fresh interpreter, not a fork of this one (its threads, its open files).
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    pending = deque()
    try:
        while True:
            while len(pending) < 2 * workers and (batch := next(batches, None)) is not None:
                pending.append(pool.submit(screen_batch, batch, heatmaps))
            if not pending:
                break
            write(pending.popleft().result())
    except BaseException as stopped:
        try:
            if isinstance(stopped, KeyboardInterrupt):
                _write_finished(pending, write)
        finally:
            _end_workers(pool)
        raise
    pool.shutdown()


# kill -9 of this process leaves the pool's semaphores to multiprocessing's resource tracker, which removes
# them, as it should, but warns that they "leaked": a killed run leaks nothing, so its tracker says nothing.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def _start_resource_tracker() -> None:
    """Start the resource tracker that the pool would start, with QUIET_TRACKER as its warnings filter
    (a process started by multiprocessing takes this one's -W options); the workers keep their own."""
    from multiprocessing import resource_tracker

    sys.warnoptions.append(QUIET_TRACKER)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(QUIET_TRACKER)


def _write_finished(pending, write) -> None:
    """On a stop: the rows of the batches already screened (rows need no order: each names its file)."""
    for future in pending:
        if future.done() and not future.cancelled() and future.exception() is None:
            with contextlib.suppress(KeyboardInterrupt):  # a second signal must not lose these rows
                write(future.result())


def _end_workers(pool) -> None:
    """Cancel what is queued and end the workers now, not after their batches."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.terminate()  # its sandboxed decoder ends with it (end of its pipe)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=5)


def die_with_parent(parent: int) -> None:
    """In a worker process, first thing: end when `parent` ends, however it ends (kill -9 included), so a
    killed run leaves no worker behind. Linux: the kernel's parent-death signal (prctl PR_SET_PDEATHSIG);
    elsewhere a thread that watches the parent. Ctrl-C is the parent's to handle: ignored here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch():
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(1)

        threading.Thread(target=watch, name="watch-parent", daemon=True).start()
    if os.getppid() != parent:  # it ended before the line above could take effect
        os._exit(1)


_screener = None


def screen_batch(paths, heatmaps=None) -> list[dict]:
    """In a worker process: this process's model and decoder, loaded on its first batch."""
    global _screener
    if _screener is None:
        _screener = Screener(heatmaps=heatmaps)
    return _screener(paths)


def summary(rows, new_rows, skipped, seconds, out=None) -> str:
    """One line: the counts per scope, the verdicts per whose answer they are and per label, errors, and this
    run's speed: "out.jsonl: 6 files: ok 4 (child: NORMAL 1, PNEUMONIA 2; adult: NORMAL 1), not_chest_xray 1;
    errors 1; ...". `out`: the output file; None for the plain command (no file)."""
    counts = Counter(row["scope"] for row in rows if not row["error"])
    verdicts = Counter((row["population"], row["label"]) for row in rows if row["scope"] == "ok" and not row["error"])
    whose = "; ".join(f"{population}: " + ", ".join(f"{label} {verdicts[population, label]}"
                                                     for p, label in sorted(verdicts) if p == population)
                      for population in sorted({p for p, _ in verdicts}, key=_population_order))
    errors = sum(1 for row in rows if row["error"])
    scopes = ", ".join(f"{scope} {n}" + (f" ({whose})" if scope == "ok" and whose else "")
                       for scope, n in sorted(counts.items(), key=lambda item: (item[0] != "ok", item[0])))
    earlier = f", {len(rows) - len(new_rows)} from an earlier run" if len(rows) > len(new_rows) else ""
    rate = len(new_rows) / seconds if seconds > 0 else 0.0
    return (f"{str(out) + ': ' if out else ''}{len(rows)} files{earlier}: {scopes or 'no results'}; errors {errors}; "
            f"skipped {skipped} non-image files; this run {len(new_rows)} files in {seconds:.1f} s, "
            f"{rate:.1f} images/s")


def _population_order(population) -> tuple:
    """The children's answer first, then the adults', then anything else (a row without one) by name."""
    return ({"child": 0, "adult": 1}.get(population, 2), str(population))


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Quiet:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total, stream):
    """Files done, rate and time left on a terminal; nothing when the output is a file or a pipe."""
    if not stream.isatty():
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=stream, smoothing=0.1, dynamic_ncols=True)
