"""Command line for the served model.

    python -m pneumo predict [--json] PATH...   classify X-ray files
    python -m pneumo predict SOURCE... --out FILE [--engine local|ray]
                                                screen an archive into a file, resumably (pneumo/batch/run.py)
    python -m pneumo info                       which model would serve

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
from pathlib import Path

# Decoding this many files at a time bounds memory and lets the model see
# full batches.
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
    if args.command == "predict" and args.out:  # an archive run: pneumo/batch/run.py
        from pneumo.batch.run import run

        return run(args.paths, args.out, args.engine, args.workers, args.ray_address)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the keras runtime: keep TensorFlow's start-up chatter off stderr
    from pneumo.settings import check_at_start_up

    check_at_start_up()  # a malformed PNEUMO_* value stops here (exit code 2), by name, not as a quiet fallback
    from pneumo.model.loading import get_model

    try:
        loaded = get_model()
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # RuntimeError: a PNEUMO_RUNTIME that cannot serve
        print(f"error: cannot load the model: {error}", file=sys.stderr)
        return EXIT_NO_MODEL
    try:
        if args.command == "info":
            print(json.dumps(loaded.identity))
            return 0
        return predict(loaded, _expand(args.paths), as_json=args.json)
    except BrokenPipeError:
        # The reader (say `| head`) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED_FILE


def predict(loaded, paths: list[str], as_json: bool) -> int:
    """Print one line per path, in order; 1 when any file could not be read."""
    from pneumo.inputs.decode import InputError, decode

    if not as_json:
        print(f"{'label':<9}  {'P(pneu.)':>8}  {'normal':>6} {'bact.':>6} {'viral':>6}  "
              f"{'strongest evidence':<{ZONES_WIDTH}}  file")
    failed = 0
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        decoded, errors = {}, {}
        for path in chunk:
            try:
                decoded[path] = decode(path)
            except InputError as error:
                errors[path] = str(error)
            except Exception as error:  # one odd file must not stop the batch
                errors[path] = f"could not be read ({type(error).__name__})"
        analyses = _analyses(decoded, loaded, errors)
        for path in chunk:
            if path in errors:
                failed += 1
                print(_error_line(path, errors[path], as_json))
            else:
                print(_result_line(path, analyses[path], as_json))
        sys.stdout.flush()
        if len(paths) > PROGRESS_AFTER:
            print(f"{start + len(chunk)}/{len(paths)}", file=sys.stderr, flush=True)
    return EXIT_FAILED_FILE if failed else 0


def _analyses(decoded: dict, loaded, errors: dict) -> dict:
    """{path: Analysis} for the decoded files. A batch that fails is retried
    file by file, so that one odd file costs only its own line (in `errors`)."""
    from pneumo.analysis import analyse, analyse_many

    try:
        return dict(zip(decoded, analyse_many(list(decoded.values()), loaded)))
    except Exception:  # which file broke the batch is found below
        pass
    analyses = {}
    for path, one in decoded.items():
        try:
            analyses[path] = analyse(one, loaded, with_heatmap=False)
        except Exception as error:
            errors[path] = f"could not be analysed ({type(error).__name__})"
    return analyses


def _result_line(path, analysis, as_json) -> str:
    if as_json:
        return json.dumps({"path": path, **analysis.as_dict()})
    notes = "".join(f"\n{'':<9}  note: {w}" for w in analysis.warnings)
    if analysis.label is None:
        return f"{'-':<9}  {'-':>8}  {'-':>6} {'-':>6} {'-':>6}  {'-':<{ZONES_WIDTH}}  {path}\n{'':<9}  " \
               f"no verdict ({analysis.scope}): {analysis.reason}" + notes
    p = analysis.probabilities
    # An adult answer has no bacterial/viral split (pneumo/answers/adult.py): those columns stay empty.
    split = "  ".join(f"{p[k]:>6.1%}" if k in p else f"{'-':>6}" for k in ("BACTERIAL", "VIRAL"))
    return (f"{analysis.label:<9}  {analysis.pneumonia_probability:>8.1%}  "
            f"{p['NORMAL']:>6.1%} {split}  {_zones(analysis.location):<{ZONES_WIDTH}}  {path}") + notes


def _zones(location) -> str:
    """The zones of a PNEUMONIA verdict's location, strongest first ("right lower, right middle"); "-" without."""
    if location is None:
        return "-"
    return ", ".join(location["zones"]) or "outside the lungs"


def _error_line(path, message, as_json) -> str:
    return json.dumps({"path": path, "error": message}) if as_json else f"{'ERROR':<9}  {path}: {message}"


def _expand(paths: list[str]) -> list[str]:
    """A folder stands for the files directly inside it (hidden ones skipped)."""
    out = []
    for path in paths:
        if Path(path).is_dir():
            out += sorted(str(p) for p in Path(path).iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            out.append(path)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pneumo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    predict_cmd = commands.add_parser(
        "predict",
        help="classify chest X-ray files",
        description="Classify chest X-ray files (JPEG, PNG, BMP, TIFF, WebP or DICOM) as NORMAL or PNEUMONIA. "
        "Prints one line per file in the order given; a file that cannot be read gets an error line, "
        "the others still run, and the exit code is then 1. Research demo, not a medical device.",
    )
    predict_cmd.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders of them")
    predict_cmd.add_argument(
        "--json", action="store_true",
        help='one JSON object per line: {"path", and the analysis result: "scope", "population", "reason", '
             '"label", "pneumonia_probability", "probabilities", "threshold", "warnings", "research", "checks", '
             '"model", "location"} '
             '(docs/result.md), or {"path", "error"}',
    )
    archive = predict_cmd.add_argument_group(
        "archive runs", "With --out: PATHs may also be folders (walked recursively; files that are neither images "
        "nor DICOM are skipped and counted) or manifests (.csv with a `path` column, .txt one path a line). "
        "One row per file goes to FILE; rerunning the same command skips the files already there, so a killed "
        "run continues where it stopped. A progress bar on a terminal, one summary line at the end.")
    archive.add_argument("--out", metavar="FILE",
                         help="the result file, its format by suffix: .jsonl, .csv (nested fields as JSON text) or "
                              ".parquet (a folder of part files); columns: path, error and the result's fields")
    archive.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: worker processes on this machine (default); ray: a Ray cluster "
                              "(pip install 'pneumonia-detector[ray]')")
    archive.add_argument("--workers", type=int, metavar="N",
                         help="local: processes, each with a model on one thread and a decoder (default: usable "
                              "cores); ray: actors, the same each (default: the cluster's CPUs)")
    archive.add_argument("--ray-address", metavar="ADDR",
                         help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: start a local one")
    commands.add_parser("info", help="print the model's identity as JSON",
                        description="Print which model would serve (source, repo, revision, sha256, "
                                    "metrics, ...) as one JSON object.")
    return parser
