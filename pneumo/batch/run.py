"""Archive runs: many files to rows in a file, resumable (`pneumo predict --out`).

    pneumo predict SOURCE... --out results.jsonl [--engine local|ray] [--workers N] [--ray-address ADDR]

SOURCE: files, folders (walked recursively) or manifests (pneumo/batch/sources.py).
Each file gets one row in --out (pneumo/batch/output.py): its result from
pneumo.analysis, or the reason it could not be read. A rerun with the same
--out screens only the files without a row, so a killed run is continued by
running the same command again.

Both engines compute a row the same way (pneumo/batch/rows.py): the file is
decoded in a sandboxed worker process (pneumo/inputs/sandbox.py, the app's limits),
then analysed in batches by pneumo.analysis.analyse_many.

    local   this machine: N worker processes (default: one per usable core),
            each with its own model on one thread and its own decoder.
    ray     a Ray cluster (pneumo/batch/ray_engine.py): N actors, the same
            Screener each; rows stream back to --out here.
"""

import os
import sys
import time
from collections import Counter, deque

from pneumo.batch.output import OutputError, open_output
from pneumo.batch.rows import BATCH, Screener
from pneumo.batch.sources import SourceError, list_sources

EXIT_OK, EXIT_FAILED_FILE, EXIT_SETUP = 0, 1, 2


def run(sources, out, engine="local", workers=None, ray_address=None, stream=None) -> int:
    """Screen `sources` into `out`; prints a progress bar (on a terminal) and one summary line to `stream`."""
    stream = stream or sys.stderr
    started = time.monotonic()
    try:
        listed = list_sources(sources)
        output = open_output(out)
    except (SourceError, OutputError) as error:
        print(f"error: {error}", file=stream)
        return EXIT_SETUP
    before = len(output.rows)
    todo = [path for path in listed.files if path not in output.done]
    progress = _progress_bar(len(todo), stream)

    def write(rows):
        output.append(rows)
        progress.update(len(rows))

    try:
        if engine == "ray":
            from pneumo.batch.ray_engine import screen_with_ray

            screen_with_ray(todo, write, workers, ray_address)  # default: the cluster's CPUs
        else:
            screen_locally(todo, write, workers or usable_cpus())
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: {len(output.rows) - before} rows written to {out}; "
              "run the same command again to continue", file=stream)
        return EXIT_FAILED_FILE
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # the model could not be loaded, Ray failed
        progress.close()
        print(f"error: {error}", file=stream)
        return EXIT_SETUP
    finally:
        output.close()
    progress.close()
    new_rows = output.rows[before:]
    print(summary(output.rows, new_rows, listed.skipped, time.monotonic() - started, out), file=stream)
    return EXIT_FAILED_FILE if any(row["error"] for row in new_rows) else EXIT_OK


def screen_locally(paths, write, workers) -> None:
    """`workers` processes, each with its own model and sandboxed decoder, screen a
    batch at a time; the rows come back here in the order given.

    Why whole pipelines and not one model fed by many decoders: ONNX Runtime
    splits every layer over its threads and waits for the slowest, so on a
    busy machine a decoder that takes one of its cores stalls the whole model.
    One thread per process, each with its own core, never waits for another."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    batches = iter([paths[start:start + BATCH] for start in range(0, len(paths), BATCH)])
    # spawn: a fresh interpreter, not a fork of this one (its threads, its open files).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = deque()
        try:
            while True:
                while len(pending) < 2 * workers and (batch := next(batches, None)) is not None:
                    pending.append(pool.submit(screen_batch, batch))
                if not pending:
                    break
                write(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()


_screener = None


def screen_batch(paths) -> list[dict]:
    """In a worker process: this process's model and decoder, loaded on its first batch."""
    global _screener
    if _screener is None:
        _screener = Screener()
    return _screener(paths)


def summary(rows, new_rows, skipped, seconds, out) -> str:
    """One line: the file's counts per scope and label, errors, and this run's speed."""
    counts = Counter(row["scope"] for row in rows if not row["error"])
    labels = Counter(row["label"] for row in rows if row["scope"] == "ok" and not row["error"])
    errors = sum(1 for row in rows if row["error"])
    scopes = ", ".join(f"{scope} {n}" + (" (" + ", ".join(f"{label} {labels[label]}" for label in sorted(labels))
                                          + ")" if scope == "ok" and labels else "")
                       for scope, n in sorted(counts.items(), key=lambda item: (item[0] != "ok", item[0])))
    earlier = f", {len(rows) - len(new_rows)} from an earlier run" if len(rows) > len(new_rows) else ""
    rate = len(new_rows) / seconds if seconds > 0 else 0.0
    return (f"{out}: {len(rows)} files{earlier}: {scopes or 'no results'}; errors {errors}; "
            f"skipped {skipped} non-image files; this run {len(new_rows)} files in {seconds:.1f} s, "
            f"{rate:.1f} images/s")


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
