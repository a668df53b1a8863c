"""The result file of an archive run: append-only, resumable, never a half row.

    output = open_output("results.jsonl")   # or .csv, or .parquet
    output.done                             # paths that already have a row
    output.rows                             # those rows (for the summary)
    output.drop(paths)                      # forget these paths' rows (error rows a rerun retries)
    output.append(rows)                     # durable when it returns
    output.close()

Rows have the columns of COLUMNS: `path`, `error`, then the result of
pneumo.analysis (docs/result.md), then `heatmap_file` (the overlay PNG of
`pneumo predict --heatmaps DIR`, else null); a file that could not be read
has its `error` and nothing else. Files written by an earlier pneumo, whose
columns are fewer (FIRST_COLUMNS, the first archives', and any of the later
ones), stay readable and resumable: a CSV or Parquet output keeps the
columns it has (`output.columns`), a JSONL row may have any such set; the
columns a row lacks read as null.

`drop` rewrites the file without those rows under a temporary name and
renames it into place (for Parquet, each part that held one), so a kill
during it leaves the old file or the new one, never half of one.

Why a run can be killed at any moment: every append is one write followed by
flush and fsync, so what is on disk is every earlier batch whole plus, at
worst, the beginning of the last one. On reopening, a JSONL or CSV file whose
end is not a complete row is cut back to its last complete row (those files
are screened again); a damaged row anywhere else means the file is not what
this command wrote, and opening it fails with a message rather than guessing.

Parquet cannot be appended to, so `.parquet` is a folder of part files (a
Parquet dataset: pandas.read_parquet and pyarrow.dataset read it as one
table): each append writes a new part under a temporary name, fsyncs it and
renames it into place, so a part is there whole or not at all.
"""

import csv
import io
import json
import os
from pathlib import Path

from pneumo import install_hint
from pneumo.analysis import RESULT_FIELDS

HEATMAP = "heatmap_file"  # the verdict's overlay PNG (pneumo predict --heatmaps), else null
COLUMNS = ("path", "error", *RESULT_FIELDS, HEATMAP)
# The columns of the first archive runs' files: every output has them, in this order; the columns added since
# (heatmap_file, a result's later fields) may be missing from an older one.
FIRST_COLUMNS = ("path", "error", "scope", "population", "reason", "label", "pneumonia_probability", "probabilities",
                 "threshold", "warnings", "research", "checks", "model", "location")


def known_columns(columns) -> bool:
    """Columns this code can read and append to: FIRST_COLUMNS and some of the later ones, in COLUMNS' order."""
    columns = tuple(columns)
    return set(FIRST_COLUMNS) <= set(columns) and columns == tuple(c for c in COLUMNS if c in columns)
NUMBERS = ("pneumonia_probability", "threshold")  # numbers in CSV cells, read back as floats
TEXTS = ("path", "error", "scope", "population", "reason", "label", HEATMAP)  # strings (or null) as they are
# Every other column (probabilities, warnings, research, checks, model, location, and a result's later fields)
# holds objects or lists: JSON text in CSV; Parquet: _table.
NESTED = tuple(c for c in COLUMNS if c not in NUMBERS + TEXTS)
PART_PREFIX, PART_SUFFIX, TEMPORARY = "part-", ".parquet", ".tmp"


class OutputError(Exception):
    """An output file that cannot be used; the message says why and what to do."""


def error_row(path: str, message: str) -> dict:
    return {"path": path, "error": message, **dict.fromkeys(RESULT_FIELDS), HEATMAP: None}


def _complete(row: dict) -> dict:
    """A row read from an older output, with the columns it lacks as null."""
    return {column: row.get(column) for column in COLUMNS}


def open_output(path):
    path = Path(path)
    kinds = {".jsonl": JsonLinesOutput, ".csv": CsvOutput, ".parquet": ParquetOutput}
    if path.suffix.lower() not in kinds:
        raise OutputError(f"--out {path}: the name must end in .jsonl, .csv or .parquet (the format)")
    if not path.parent.is_dir():
        raise OutputError(f"--out {path}: the folder {path.parent} does not exist")
    return kinds[path.suffix.lower()](path)


def _damaged(path, where) -> OutputError:
    return OutputError(f"{path} is damaged or not written by `pneumo predict --out` ({where}); "
                       "move it away or choose another --out")


def _durable_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _cut_to(path: Path, size: int) -> None:
    """Drop a half-written last row (a run killed while writing)."""
    with open(path, "r+b") as file:
        file.truncate(size)
        file.flush()
        os.fsync(file.fileno())


def _replace_durably(path: Path, data: bytes) -> None:
    """`path` holds `data`, all of it or none of it: a temporary file, fsynced, renamed into place."""
    temporary = path.with_name(path.name + TEMPORARY)
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


class _TextOutput:
    columns = COLUMNS  # what this file's rows hold (an older CSV: fewer, known_columns)

    def __init__(self, path: Path):
        self.path = path
        self.rows = self._read() if path.exists() else self._start()
        self.done = {row["path"] for row in self.rows}

    def append(self, rows: list[dict]) -> None:
        if rows:
            _durable_append(self.path, "".join(map(self._line, rows)))
            self.rows += [_complete(row) for row in rows]
            self.done.update(row["path"] for row in rows)

    def drop(self, paths) -> None:
        paths = set(paths)
        if not paths & self.done:
            return
        self.rows = [row for row in self.rows if row["path"] not in paths]
        self.done -= paths
        _replace_durably(self.path, (self._head() + "".join(map(self._line, self.rows))).encode("utf-8"))

    def close(self) -> None:
        pass

    def _head(self) -> str:
        return ""

    def _start(self) -> list:
        _durable_append(self.path, "")
        return []

    def _read(self) -> list[dict]:
        if self.path.is_dir():
            raise OutputError(f"--out {self.path} is a folder")
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise OutputError(f"--out {self.path} cannot be read: {error}") from None
        complete = data.rfind(b"\n") + 1  # everything after the last newline is a half row
        if complete < len(data):
            _cut_to(self.path, complete)
        try:
            text = data[:complete].decode("utf-8")
        except UnicodeDecodeError:
            raise _damaged(self.path, "not UTF-8 text") from None
        return self._parse(text)


class JsonLinesOutput(_TextOutput):
    """One JSON object a line (rows of older runs may lack heatmap_file)."""

    @staticmethod
    def _line(row: dict) -> str:
        return json.dumps({column: row.get(column) for column in COLUMNS}, ensure_ascii=False) + "\n"

    def _parse(self, text: str) -> list[dict]:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
            except ValueError:
                raise _damaged(self.path, f"line {number} is not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or \
                    not known_columns(c for c in COLUMNS if c in row) or not set(row) <= set(COLUMNS):
                raise _damaged(self.path, f"line {number} is not a result row")
            rows.append(_complete(row))
        return rows


class CsvOutput(_TextOutput):
    """A header, then one row a line; nested fields are JSON text, null is an empty cell."""

    def _line(self, row: dict) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(_csv_cell(row.get(c), c in NESTED) for c in self.columns)
        return buffer.getvalue()

    def _head(self) -> str:
        return ",".join(self.columns) + "\n"

    def _start(self) -> list:
        _durable_append(self.path, self._head())
        return []

    def _parse(self, text: str) -> list[dict]:
        if not text:  # killed before the header reached the disk
            _durable_append(self.path, self._head())
            return []
        try:
            records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error as error:
            raise _damaged(self.path, str(error)) from None
        if not known_columns(records[0]):
            raise _damaged(self.path, "its header is not " + ",".join(COLUMNS))
        self.columns = tuple(records[0])
        rows = []
        for number, record in enumerate(records[1:], 2):
            if len(record) != len(self.columns):
                raise _damaged(self.path, f"row {number} has {len(record)} cells, not {len(self.columns)}")
            try:
                rows.append(_complete({c: _csv_value(cell, c) for c, cell in zip(self.columns, record)}))
            except ValueError:
                raise _damaged(self.path, f"row {number} has a cell that is not JSON") from None
        return rows


def _csv_cell(value, nested: bool) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if nested else str(value)


def _csv_value(cell: str, column: str):
    if cell == "":
        return None
    if column in NESTED:
        return json.loads(cell)
    return float(cell) if column in NUMBERS else cell


class ParquetOutput:
    """A folder of part files, each written whole and renamed into place."""

    def __init__(self, path: Path):
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise OutputError("--out *.parquet needs pyarrow: " + install_hint("parquet")) from None
        self.path = path
        if path.exists() and not path.is_dir():
            raise _damaged(path, "a .parquet output is a folder of part files, this is a file")
        path.mkdir(exist_ok=True)
        self.columns = COLUMNS  # an older output's parts: fewer (known_columns), every part the same
        self.rows = self._read()
        self.done = {row["path"] for row in self.rows}
        # The next part's number: after the highest, since drop() may leave gaps.
        numbers = [p.name[len(PART_PREFIX):-len(PART_SUFFIX)] for p in self._parts()]
        self.parts = max((int(n) for n in numbers if n.isdigit()), default=-1) + 1

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        self._write(self.path / f"{PART_PREFIX}{self.parts:06d}{PART_SUFFIX}", rows)
        self.parts += 1
        self.rows += [_complete(row) for row in rows]
        self.done.update(row["path"] for row in rows)

    def drop(self, paths) -> None:
        """Each part that holds one of `paths` is rewritten without it (renamed over itself), or removed."""
        import pyarrow.parquet as pq

        paths = set(paths)
        if not paths & self.done:
            return
        for part in self._parts():
            rows = [_from_parquet(row) for row in pq.read_table(part).to_pylist()]
            kept = [row for row in rows if row["path"] not in paths]
            if len(kept) == len(rows):
                continue
            if kept:
                self._write(part, kept)
            else:
                part.unlink()
                _fsync_folder(self.path)
        self.rows = [row for row in self.rows if row["path"] not in paths]
        self.done -= paths

    def _write(self, final: Path, rows: list[dict]) -> None:
        import pyarrow.parquet as pq

        temporary = final.with_name(final.name + TEMPORARY)
        with open(temporary, "wb") as file:
            pq.write_table(_table(rows, self.columns), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
        _fsync_folder(self.path)

    def close(self) -> None:
        pass

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.name.startswith(PART_PREFIX) and p.suffix == PART_SUFFIX)

    def _read(self) -> list[dict]:
        import pyarrow.parquet as pq

        for leftover in self.path.glob(f"{PART_PREFIX}*{TEMPORARY}"):  # a part that was being written
            leftover.unlink()
        strangers = [p.name for p in self.path.iterdir() if not p.name.startswith(PART_PREFIX)]
        if strangers:
            raise _damaged(self.path, f"it holds {strangers[0]}")
        rows = []
        for number, part in enumerate(self._parts()):
            try:
                table = pq.read_table(part)
            except Exception as error:  # pyarrow raises several kinds for a damaged file
                raise _damaged(self.path, f"{part.name}: {error}") from None
            if not known_columns(table.column_names) or \
                    (number and tuple(table.column_names) != self.columns):
                raise _damaged(self.path, f"{part.name} has other columns")
            self.columns = tuple(table.column_names)
            rows += [_from_parquet(row) for row in table.to_pylist()]
        return rows


def _parquet_schema(columns=COLUMNS):
    import pyarrow as pa

    text = pa.string()
    types = {**dict.fromkeys(NUMBERS, pa.float64()), "warnings": pa.list_(text)}
    return pa.schema([(c, types.get(c, text)) for c in columns])


def _table(rows: list[dict], columns=COLUMNS):
    """Nested objects as JSON text: their keys vary (a check that did not run has
    none), and one fixed schema keeps every part readable as one dataset."""
    import pyarrow as pa

    def cell(row, column):
        value = row.get(column)
        return json.dumps(value) if column in NESTED and column != "warnings" and value is not None else value

    return pa.Table.from_pylist([{c: cell(row, c) for c in columns} for row in rows], schema=_parquet_schema(columns))


def _from_parquet(row: dict) -> dict:
    return _complete({c: json.loads(v) if c in NESTED and c != "warnings" and v is not None else v
                      for c, v in row.items()})


def _fsync_folder(folder: Path) -> None:
    """The rename itself must reach the disk, or a crash could forget the part."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
