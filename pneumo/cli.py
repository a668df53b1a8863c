"""Command line for the served model.

    python -m pneumo predict [--json] [--heatmaps DIR] PATH...
                                                classify X-ray files
    python -m pneumo predict SOURCE... --out FILE [--heatmaps DIR] [--engine local|ray]
                                                screen an archive into a file, resumably (pneumo/batch/run.py)
    python -m pneumo info                       which model would serve, and pneumo's version
    python -m pneumo --version

Both ways of `predict` list their PATHs alike (pneumo/batch/sources.py: folders walked,
non-image files skipped and counted), decode each file in a sandboxed worker process
and analyse it with the same call (pneumo/batch/rows.py), and end with the same one-line
summary on stderr; the plain command prints its rows instead of writing them to a file.

The model is chosen as in the app: PNEUMO_MODEL_PATH, else PNEUMO_MODEL_REPO
(at PNEUMO_MODEL_REVISION), else the bundled model. It runs on the run's ONNX
models when it has them (int8 on CPUs with VNNI, else float) and on Keras
otherwise; PNEUMO_RUNTIME chooses (pneumo/model/runtime.py), and `info` names the
runtime that serves.
"""

import argparse
import json
import os
import sys
import time

# Decoding this many files at a time bounds memory and lets the model see
# full batches (pneumo.batch.rows.BATCH, as archive runs).
CHUNK = 16
# Batches longer than this report progress on stderr.
PROGRESS_AFTER = 10

EXIT_FAILED_FILE, EXIT_NO_MODEL = 1, 2
ZONES_WIDTH = 25  # "right middle, right lower" fits; more zones run on


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not args.command:
        _parser().print_help(sys.stderr)
        return EXIT_NO_MODEL
    if args.command == "predict" and not args.out and (args.workers or args.ray_address or args.engine != "local"):
        _parser().error("--engine, --workers and --ray-address need --out")
    if args.command == "predict" and args.workers is not None and args.workers < 1:
        _parser().error("--workers must be at least 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the keras runtime: keep TensorFlow's start-up chatter off stderr
    from pneumo.settings import check_at_start_up

    check_at_start_up()  # a malformed PNEUMO_* value stops here (exit code 2), by name, not as a quiet fallback
    if args.command == "predict" and args.out:  # an archive run: pneumo/batch/run.py
        from pneumo.batch.run import run

        return run(args.paths, args.out, args.engine, args.workers, args.ray_address, heatmaps=args.heatmaps)
    from pneumo.model.loading import get_model

    try:
        loaded = get_model()
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # RuntimeError: a PNEUMO_RUNTIME that cannot serve
        print(f"error: cannot load the model: {error}", file=sys.stderr)
        return EXIT_NO_MODEL
    try:
        if args.command == "info":
            from pneumo import __version__

            print(json.dumps({"version": __version__, **loaded.identity}))
            return 0
        return predict(loaded, args.paths, as_json=args.json, heatmaps=args.heatmaps)
    except BrokenPipeError:
        # The reader (say `| head`) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED_FILE


def predict(loaded, sources: list[str], as_json: bool, heatmaps=None) -> int:
    """Print one line per file, in order (a table, or JSON lines), then one summary line on stderr;
    1 when any file could not be read. `heatmaps`: a folder for each verdict's overlay PNG."""
    from pneumo.batch.rows import Screener
    from pneumo.batch.run import summary
    from pneumo.batch.sources import SourceError, list_sources

    started = time.monotonic()
    try:
        listed = list_sources(sources, missing_ok=True)  # a missing file gets its error line; the others run
        if heatmaps:
            os.makedirs(heatmaps, exist_ok=True)
    except (SourceError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_MODEL
    paths, rows = listed.files, []
    if not as_json:
        print(f"{'label':<9}  {'answer':<6}  {'P(pneu.)':>8}  {'normal':>6} {'bact.':>6} {'viral':>6}  "
              f"{'strongest evidence':<{ZONES_WIDTH}}  file")
    screener = Screener(loaded, heatmaps)  # the archive runs' sandboxed decoder and analysis
    try:
        for start in range(0, len(paths), CHUNK):
            chunk = screener(paths[start:start + CHUNK])
            for row in chunk:
                print(_line(row, as_json, heatmaps))
            rows += chunk
            sys.stdout.flush()
            if len(paths) > PROGRESS_AFTER:
                print(f"{start + len(chunk)}/{len(paths)}", file=sys.stderr, flush=True)
    finally:
        screener.close()
    print(summary(rows, rows, listed.skipped, time.monotonic() - started), file=sys.stderr, flush=True)
    return EXIT_FAILED_FILE if any(row["error"] for row in rows) else 0


def _line(row, as_json, heatmaps) -> str:
    """A row (pneumo.batch.rows) as the plain command prints it: {"path", "error"} or {"path", the result...}
    (plus "heatmap_file" with --heatmaps), or a line of the table."""
    from pneumo.analysis import RESULT_FIELDS

    if row["error"]:
        return json.dumps({"path": row["path"], "error": row["error"]}) if as_json else \
            f"{'ERROR':<9}  {row['path']}: {row['error']}"
    if as_json:
        extra = {"heatmap_file": row["heatmap_file"]} if heatmaps else {}
        return json.dumps({"path": row["path"], **{key: row[key] for key in RESULT_FIELDS}, **extra})
    notes = "".join(f"\n{'':<9}  note: {w}" for w in row["warnings"])
    if heatmaps and row["heatmap_file"]:
        notes += f"\n{'':<9}  heatmap: {row['heatmap_file']}"
    if row["label"] is None:
        return f"{'-':<9}  {'-':<6}  {'-':>8}  {'-':>6} {'-':>6} {'-':>6}  {'-':<{ZONES_WIDTH}}  {row['path']}\n" \
               f"{'':<9}  no verdict ({row['scope']}): {row['reason']}" + notes
    p = row["probabilities"]
    # An adult answer has no bacterial/viral split (pneumo/answers/adult.py): those columns stay empty.
    split = " ".join(f"{p[k]:>6.1%}" if k in p else f"{'-':>6}" for k in ("BACTERIAL", "VIRAL"))
    return (f"{row['label']:<9}  {row['population'] or '-':<6}  {row['pneumonia_probability']:>8.1%}  "
            f"{p['NORMAL']:>6.1%} {split}  {_zones(row['location']):<{ZONES_WIDTH}}  {row['path']}") + notes


def _zones(location) -> str:
    """The zones of a PNEUMONIA verdict's location, strongest first ("right lower, right middle"); "-" without."""
    if location is None:
        return "-"
    return ", ".join(location["zones"]) or "outside the lungs"


def _parser() -> argparse.ArgumentParser:
    from pneumo import __version__, install_hint
    from pneumo.inputs.pixels import SUPPORTED  # the formats the decoders take, as the app and the MCP tool list them

    parser = argparse.ArgumentParser(
        prog="python -m pneumo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    predict_cmd = commands.add_parser(
        "predict",
        help="classify chest X-ray files",
        description=f"Classify chest X-ray files ({SUPPORTED}) as NORMAL or PNEUMONIA, each by the answer for "
        "whose film it is (a young child's or an adult's). Prints one line per file in the order given, then one "
        "summary line on stderr; a file that cannot be read gets an error line, the others still run, and the exit "
        "code is then 1. Research demo, not a medical device.",
    )
    predict_cmd.add_argument("paths", nargs="+", metavar="PATH",
                             help="image or DICOM files, folders (walked recursively; files that are neither "
                                  "images nor DICOM are skipped and counted) or manifests (.csv with a `path` "
                                  "column, .txt one path a line)")
    predict_cmd.add_argument(
        "--json", action="store_true",
        help='one JSON object per line: {"path", and the analysis result: "scope", "population", "reason", '
             '"label", "pneumonia_probability", "probabilities", "threshold", "warnings", "research", "checks", '
             '"model", "location", "lungs"} '
             '(docs/result.md), or {"path", "error"}',
    )
    predict_cmd.add_argument("--heatmaps", metavar="DIR",
                             help="write each verdict's heatmap overlay (the picture the app shows) to DIR as "
                                  "NAME-HASH.png; JSON lines and --out rows name it in heatmap_file")
    archive = predict_cmd.add_argument_group(
        "archive runs", "With --out: one row per file goes to FILE; rerunning the same command skips the files "
        "already there and tries the ones that failed again, so a killed run continues where it stopped. A run "
        "of another model on the same FILE is refused. A progress bar on a terminal, one summary line at the end.")
    archive.add_argument("--out", metavar="FILE",
                         help="the result file, its format by suffix: .jsonl, .csv (nested fields as JSON text) or "
                              ".parquet (a folder of part files); columns: path, error, the result's fields and "
                              "heatmap_file")
    archive.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: worker processes on this machine (default); ray: a Ray cluster "
                              f"({install_hint('ray')})")
    archive.add_argument("--workers", type=int, metavar="N",
                         help="local: processes, each with a model on one thread and a decoder (default: usable "
                              "cores); ray: actors, the same each (default: the cluster's CPUs)")
    archive.add_argument("--ray-address", metavar="ADDR",
                         help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: start a local one")
    commands.add_parser("info", help="print the model's identity as JSON",
                        description="Print which model would serve (source, repo, revision, sha256, "
                                    "metrics, ...) as one JSON object.")
    return parser
