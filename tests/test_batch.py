"""Archive runs, `pneumo predict SOURCE... --out FILE`: rows, resuming, engines.

The bundled model serves (no PNEUMO_* variables), so the example films get
real verdicts. Ray's tests start real (small) Ray clusters."""

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require

from pneumo.batch import run as batch
from pneumo.batch import rows as batch_rows
from pneumo.batch.output import COLUMNS, NESTED, NUMBERS, OutputError, open_output

EXAMPLES = ROOT / "examples"
# What each file of the tree must give: (scope, label) or "error".
EXPECTED = {
    "child-normal.jpeg": ("ok", "NORMAL"),
    "a/child-bacterial-pneumonia.jpeg": ("ok", "PNEUMONIA"),
    "a/b/child-viral-pneumonia.jpeg": ("ok", "PNEUMONIA"),
    "a/adult.jpeg": ("ok", "NORMAL"),  # the adult answer (an adult film read as "No Finding")
    "a/b/ct-export": ("not_chest_xray", None),  # a DICOM without a suffix
    "broken.jpeg": "error",
}
SUMMARY = re.compile(r": 6 files(?:, \d+ from an earlier run)?: "
                     r"ok 4 \(child: NORMAL 1, PNEUMONIA 2; adult: NORMAL 1\), not_chest_xray 1; errors 1; "
                     r"skipped 1 non-image files; this run (\d+) files in [\d.]+ s, [\d.]+ images/s$")


def bundled_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
    env.update(HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    return env


@pytest.fixture(autouse=True)
def bundled_model(monkeypatch):
    for key in [k for k in os.environ if k.startswith("PNEUMO_")]:
        monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Images in nested folders, a DICOM without a suffix, a broken JPEG, a
    non-image (skipped, counted) and a hidden folder (ignored)."""
    import pydicom.data

    root = tmp_path_factory.mktemp("archive")
    for name in EXPECTED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
    for name in ("child-normal.jpeg", "a/child-bacterial-pneumonia.jpeg", "a/b/child-viral-pneumonia.jpeg",
                 "a/adult.jpeg"):
        shutil.copy(EXAMPLES / Path(name).name, root / name)
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), root / "a/b/ct-export")
    (root / "broken.jpeg").write_bytes((EXAMPLES / "child-normal.jpeg").read_bytes()[:3000])
    (root / "a/notes.txt").write_text("not an image\n")
    (root / ".cache").mkdir()
    shutil.copy(EXAMPLES / "adult.jpeg", root / ".cache/thumbnail.jpeg")
    return root


def pneumo(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pneumo", "predict", *map(str, args)], cwd=ROOT,
                          env=bundled_env(), capture_output=True, text=True, timeout=timeout)


def read_rows(out: Path) -> list[dict]:
    """The output read back with ordinary tools, not with pneumo's own reader."""
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    if out.suffix == ".csv":
        with open(out, newline="") as file:
            rows = list(csv.DictReader(file))
        assert rows and tuple(rows[0]) == COLUMNS
        return [{k: (json.loads(v) if k in NESTED else float(v) if k in NUMBERS else v)
                 if v != "" else None for k, v in row.items()} for row in rows]
    import pandas

    table = pandas.read_parquet(out)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return [{**row, **{k: json.loads(row[k]) for k in set(NESTED) - {"warnings"}
                       if row[k] is not None}, "warnings": None if row["warnings"] is None else list(row["warnings"])}
            for row in rows]


def by_file(rows, root) -> dict:
    return {str(Path(row["path"]).relative_to(root)): row for row in rows}


def assert_tree_rows(rows, root):
    assert len(rows) == len({row["path"] for row in rows}), "a file has two rows"
    files = by_file(rows, root)
    assert set(files) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        row = files[name]
        assert set(row) == set(COLUMNS)
        if expected == "error":
            assert row["error"] and row["scope"] is None and row["model"] is None, row
            continue
        assert row["error"] is None and (row["scope"], row["label"]) == expected, (name, row)
        assert row["model"]["source"] == "bundled" and len(row["model"]["sha256"]) == 64
        if row["scope"] == "ok":
            classes = {"NORMAL", "PNEUMONIA"} if row["population"] == "adult" else {"NORMAL", "BACTERIAL", "VIRAL"}
            assert 0 <= row["pneumonia_probability"] <= 1 and set(row["probabilities"]) == classes
        else:
            assert row["reason"] and row["probabilities"] is None and row["research"]["probabilities"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_folder_tree_gives_one_row_per_file_and_a_summary(tree, tmp_path, suffix):
    if suffix == ".parquet":
        require(importlib.util.find_spec("pyarrow"), "pyarrow is not installed (requirements-dev.txt)")
    out = tmp_path / f"results{suffix}"
    result = pneumo(tree, "--out", out, "--workers", "1")
    assert result.returncode == 1, result.stderr  # the broken file
    # Not a terminal: no progress bar, only the summary line.
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and SUMMARY.search(lines[0]) and SUMMARY.search(lines[0]).group(1) == "6", result.stderr
    assert result.stdout == ""
    rows = read_rows(out)
    assert_tree_rows(rows, tree)

    again = pneumo(tree, "--out", out)  # only the file that failed is screened again
    assert SUMMARY.search(again.stderr.strip()).group(1) == "1", again.stderr
    assert again.returncode == 1  # it still fails
    again_rows = read_rows(out)
    assert_tree_rows(again_rows, tree)  # still one row per file
    assert sorted(again_rows, key=lambda row: row["path"]) == sorted(rows, key=lambda row: row["path"])


def test_a_manifest_and_named_files(tree, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# films\n{tree / 'child-normal.jpeg'}\n\n{tree / 'a/notes.txt'}\n")
    out = tmp_path / "results.jsonl"
    result = pneumo(manifest, tree / "child-normal.jpeg", "--out", out)
    rows = read_rows(out)
    # A named file is screened even when it is no image (its row says why); a file named twice, once.
    assert [Path(row["path"]).name for row in rows] == ["child-normal.jpeg", "notes.txt"]
    assert rows[0]["label"] == "NORMAL" and rows[1]["error"]
    assert result.returncode == 1


def films(folder: Path, count: int) -> Path:
    folder.mkdir()
    names = ["child-normal.jpeg", "child-bacterial-pneumonia.jpeg", "child-viral-pneumonia.jpeg", "adult.jpeg"]
    for i in range(count):
        shutil.copy(EXAMPLES / names[i % len(names)], folder / f"{i:03d}-{names[i % len(names)]}")
    return folder


def row_count(out: Path) -> int:
    if out.suffix == ".parquet":
        return len(list(out.glob("part-*.parquet")))
    return out.read_bytes().count(b"\n") if out.exists() else 0


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_killed_run_resumes_with_every_file_exactly_once(tmp_path, suffix):
    if suffix == ".parquet":
        require(importlib.util.find_spec("pyarrow"), "pyarrow is not installed (requirements-dev.txt)")
    folder = films(tmp_path / "films", 96)
    out = tmp_path / f"results{suffix}"
    first_batch_written = 2 if suffix == ".csv" else 1  # a CSV's header line comes first
    process = subprocess.Popen([sys.executable, "-m", "pneumo", "predict", str(folder), "--out", str(out),
                                "--workers", "1"], cwd=ROOT, env=bundled_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while row_count(out) < first_batch_written and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for the first batch, not a timing assertion
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    complete = {".jsonl": 96, ".csv": 97, ".parquet": 96 // batch_rows.BATCH}[suffix]
    assert first_batch_written <= row_count(out) < complete, "killed before the first batch or after the last"
    # What a kill in the middle of a write leaves behind: half a row, or a part file not yet renamed.
    if suffix == ".parquet":
        (out / "part-999999.parquet.tmp").write_bytes(b"PAR1 half a part")
    else:
        with open(out, "ab") as file:
            file.write(b'{"path": "half a row' if suffix == ".jsonl" else b"/films/half,a,row")

    result = pneumo(folder, "--out", out, "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "from an earlier run" in result.stderr
    rows = read_rows(out)
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in folder.iterdir())
    assert all(row["error"] is None and row["scope"] for row in rows)


def run_in_process(sources, out, **options) -> tuple[int, list[dict], str]:
    stream = io.StringIO()
    code = batch.run(sources, out, stream=stream, **options)
    return code, read_rows(Path(out)), stream.getvalue()


def comparable(rows) -> dict:
    """Rows by path; the floats to 6 places (different batch make-ups may change the last bits)."""
    def rounded(value):
        if isinstance(value, float):
            return round(value, 6)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    return {row["path"]: {k: rounded(v) for k, v in row.items()} for row in rows}


@pytest.fixture(scope="module")
def local_rows(tree, tmp_path_factory):
    code, rows, _ = run_in_process([tree], tmp_path_factory.mktemp("one") / "one.jsonl", workers=1)
    assert code == 1
    return rows


def test_two_local_workers_give_the_same_rows_as_one(tree, tmp_path, local_rows):
    code, rows, text = run_in_process([tree], tmp_path / "two.jsonl", workers=2)
    assert code == 1 and SUMMARY.search(text.strip())
    assert comparable(rows) == comparable(local_rows)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_progress_bar(tree, tmp_path):
    stream = Terminal()
    batch.run([tree], tmp_path / "out.jsonl", workers=1, stream=stream)
    bar = stream.getvalue()
    assert "6/6" in bar and "file/s" in bar, bar  # files done, rate (and time left while running)
    assert SUMMARY.search(bar.strip().splitlines()[-1])


def test_unusable_outputs_get_a_clear_error(tree, tmp_path):
    damaged = tmp_path / "results.jsonl"
    damaged.write_text('{"path": "a"}\nnot json\n')
    code, text = batch.run([tree], damaged, stream=(stream := io.StringIO())), stream.getvalue()
    assert code == 2 and "damaged or not written by `pneumo predict --out`" in text and "line 1" in text
    assert damaged.read_text() == '{"path": "a"}\nnot json\n'  # nothing written to someone else's file

    foreign_csv = tmp_path / "table.csv"
    foreign_csv.write_text("name,age\nx,1\n")
    with pytest.raises(OutputError, match="header"):
        open_output(foreign_csv)
    with pytest.raises(OutputError, match="does not exist"):
        open_output(tmp_path / "missing" / "results.jsonl")
    with pytest.raises(OutputError, match=r"\.jsonl, \.csv or \.parquet"):
        open_output(tmp_path / "results.txt")
    assert batch.run([tmp_path / "no-such-folder"], tmp_path / "r.jsonl", stream=(stream := io.StringIO())) == 2
    assert "no such file or folder" in stream.getvalue()


def test_a_half_written_last_row_is_dropped_and_screened_again(tmp_path):
    out = tmp_path / "results.jsonl"
    row = {column: None for column in COLUMNS} | {"path": "done.jpeg", "error": "x"}
    out.write_text(json.dumps(row) + "\n" + '{"path": "half.jpe')
    output = open_output(out)
    assert output.done == {"done.jpeg"}
    assert out.read_text() == json.dumps(row) + "\n"


def test_a_file_mended_after_a_run_is_screened_again(tmp_path):
    folder = films(tmp_path / "films", 2)
    broken = folder / "later-mended.jpeg"
    broken.write_bytes((EXAMPLES / "child-normal.jpeg").read_bytes()[:3000])
    out = tmp_path / "rows.csv"
    code, rows, _ = run_in_process([folder], out, workers=1)
    assert code == 1 and [row["path"] for row in rows if row["error"]] == [str(broken)]
    shutil.copy(EXAMPLES / "child-normal.jpeg", broken)
    code, rows, text = run_in_process([folder], out, workers=1)
    assert code == 0, text
    assert "3 files, 2 from an earlier run" in text and "errors 0" in text, text
    assert sorted(row["path"] for row in rows) == sorted(str(path) for path in folder.iterdir())  # one row each
    assert all(row["error"] is None for row in rows) and by_file(rows, folder)[broken.name]["label"] == "NORMAL"


def test_a_rerun_with_another_model_is_refused(tmp_path):
    """The file's rows came from one model; a rerun that serves another writes nothing and says which two."""
    folder = films(tmp_path / "films", 3)
    (folder / "broken.jpeg").write_bytes((EXAMPLES / "adult.jpeg").read_bytes()[:3000])  # its error row stays too
    out = tmp_path / "rows.jsonl"
    first = sorted(folder.glob("0*"))[:2] + [folder / "broken.jpeg"]  # the third film is left for the rerun
    code, rows, _ = run_in_process(first, out, workers=1)
    assert code == 1 and len(rows) == 3 and rows[2]["error"]
    served = rows[0]["model"]
    for row in rows[:2]:  # as if an earlier model had written them
        row["model"] = {**row["model"], "name": "pneumo-older", "sha256": "0123456789ab" + "0" * 52}
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = out.read_bytes()
    code, _, text = run_in_process([folder], out, workers=1)
    assert code == 2, text
    assert "pneumo-older (sha256 0123456789ab" in text and f"{served['name']} (sha256 {served['sha256'][:12]}" in text
    assert "choose another --out" in text.lower(), text
    assert out.read_bytes() == before  # nothing of the other model written


def test_heatmaps_are_written_and_named_in_the_rows(tree, tmp_path):
    import numpy as np
    from PIL import Image, ImageChops

    from pneumo.analysis import analyse
    from pneumo.overlay import picture

    out, heatmaps = tmp_path / "rows.csv", tmp_path / "heatmaps"
    code, rows, _ = run_in_process([tree], out, workers=1, heatmaps=str(heatmaps))
    assert code == 1
    files = by_file(rows, tree)
    for name, expected in EXPECTED.items():
        row = files[name]
        if expected == "error" or expected[0] != "ok":
            assert row["heatmap_file"] is None, row  # no verdict, no heatmap
            continue
        assert Path(row["heatmap_file"]).parent == heatmaps and Path(row["heatmap_file"]).suffix == ".png"
    assert len(set(row["heatmap_file"] for row in rows if row["heatmap_file"])) == 4 == len(os.listdir(heatmaps))
    written = Image.open(files["a/adult.jpeg"]["heatmap_file"])
    shown = picture(analyse(tree / "a/adult.jpeg"))  # what the app shows for the same file
    assert written.size == shown.size
    difference = np.asarray(ImageChops.difference(written.convert("RGB"), shown.convert("RGB")), np.float64)
    assert difference.mean() < 1.0  # the same picture (a batch of other films may move a float's last bits)


def test_an_output_written_before_heatmap_files_is_resumed(tmp_path):
    """A CSV of an older pneumo (no heatmap_file column) keeps its columns; asking it for heatmaps is refused."""
    from pneumo.batch.output import FIRST_COLUMNS

    folder = films(tmp_path / "films", 3)
    first = sorted(folder.iterdir())[0]
    code, rows, _ = run_in_process([first], tmp_path / "new.jsonl", workers=1)
    old = tmp_path / "old.csv"
    with open(old, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(FIRST_COLUMNS)
        writer.writerow("" if rows[0][c] is None else json.dumps(rows[0][c]) if c in NESTED else rows[0][c]
                        for c in FIRST_COLUMNS)
    code = batch.run([folder], old, workers=1, heatmaps=str(tmp_path / "heatmaps"), stream=(stream := io.StringIO()))
    assert code == 2 and "heatmap_file" in stream.getvalue() and "choose another --out" in stream.getvalue()
    code = batch.run([folder], old, workers=1, stream=(stream := io.StringIO()))
    assert code == 0 and "3 files, 1 from an earlier run" in stream.getvalue(), stream.getvalue()
    with open(old, newline="") as file:
        table = list(csv.reader(file))
    assert tuple(table[0]) == FIRST_COLUMNS and len(table) == 4 and all(len(r) == len(FIRST_COLUMNS) for r in table)


# Ray: the same rows from Ray Data and an actor pool, on a local Ray and on two nodes.

def require_ray():
    require(importlib.util.find_spec("ray"), "ray is not installed (requirements-dev.txt; pip install '.[ray]')")


def test_ray_started_by_the_command_gives_the_local_rows(tree, tmp_path, local_rows):
    require_ray()
    out = tmp_path / "ray.jsonl"
    result = pneumo(tree, "--out", out, "--engine", "ray", "--workers", "1")
    assert result.returncode == 1, result.stderr
    assert SUMMARY.search(result.stderr.strip().splitlines()[-1]), result.stderr
    assert comparable(read_rows(out)) == comparable(local_rows)


def test_ray_on_two_nodes_gives_the_local_rows(tree, tmp_path, local_rows):
    require_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        code, rows, text = run_in_process([tree], tmp_path / "ray.parquet" if importlib.util.find_spec("pyarrow")
                                          else tmp_path / "ray.jsonl", engine="ray", workers=2,
                                          ray_address=cluster.address)
    finally:
        cluster.shutdown()
    assert code == 1, text
    assert comparable(rows) == comparable(local_rows)
