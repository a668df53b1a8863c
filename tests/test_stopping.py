"""A stopped archive run leaves no process behind: `kill -TERM` writes the rows already screened and
ends the workers; `kill -9` of the command ends its workers too (they die with their parent), and
neither leaves a decoder or multiprocessing's resource tracker running, nor warns of leaked semaphores.

Each run starts in a session of its own, so every process it starts (its workers, their sandboxed
decoders, the resource tracker) is found by that session's id, whoever their parent is by then."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_import, synthetic_xray

psutil = require_import("psutil")

EXAMPLES = ROOT / "examples"
FILMS = 96  # six batches on two workers: seconds of work after the first rows, so the run is stopped in the middle
GONE_WITHIN_S = 5


def bundled_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
    env.update(HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", GRADIO_ANALYTICS_ENABLED="False")
    return env


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("films")
    examples = sorted(EXAMPLES.glob("*.jpeg"))
    for i in range(FILMS - 2):
        shutil.copy(examples[i % len(examples)], folder / f"{i:03d}-{examples[i % len(examples)].name}")
    for i, kind in enumerate(("normal", "bacteria")):
        synthetic_xray(kind, seed=i, size=256).save(folder / f"synthetic-{kind}.png")
    return folder


def session_of(leader: int) -> list:
    """The live processes of the session `leader` started (zombies are dead: only not yet reaped)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == leader and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def described(processes) -> list[str]:
    """Each process's command line (its pid if it ended meanwhile)."""
    names = []
    for process in processes:
        try:
            names.append(" ".join(process.cmdline()) or str(process.pid))
        except psutil.Error:
            names.append(str(process.pid))
    return names


def rows_in(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def start_and_wait_for_rows(films, out, stderr):
    """`pneumo predict FILMS --out OUT --workers 2` in a session of its own, once its first rows are on disk
    and its workers and decoders run."""
    process = subprocess.Popen([sys.executable, "-m", "pneumo", "predict", str(films), "--out", str(out),
                                "--workers", "2"], cwd=ROOT, env=bundled_env(), stdout=subprocess.DEVNULL,
                               stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 300
    while rows_in(out) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the first rows, not a timing assertion
    assert process.poll() is None, "the run ended before it could be stopped"
    names = " ".join(described(session_of(process.pid)))
    assert "pneumo.inputs.sandbox_worker" in names and "multiprocessing" in names, names
    return process


def wait_until_alone(process, leader) -> list:
    """The session's processes still alive GONE_WITHIN_S seconds after the signal (an empty list at best)."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None and not session_of(leader):
            return []
        time.sleep(0.1)
    return described(session_of(leader))


def kill_session(leader) -> None:
    """After a failed test: nothing of it may run on."""
    for process in session_of(leader):
        try:
            process.kill()
        except psutil.Error:
            pass


def test_sigterm_writes_the_rows_and_ends_every_process(films, tmp_path):
    out, log = tmp_path / "rows.jsonl", tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = start_and_wait_for_rows(films, out, stderr)
    try:
        process.send_signal(signal.SIGTERM)
        left = wait_until_alone(process, process.pid)
    finally:
        kill_session(process.pid)
        process.wait()
    assert not left, f"still running {GONE_WITHIN_S} s after SIGTERM: {left}"
    text = log.read_text()
    assert process.returncode == 1, text
    assert "stopped by SIGTERM" in text and "run the same command again to continue" in text, text
    assert "leaked" not in text and "Traceback" not in text, text  # workers and their semaphores ended cleanly
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(rows) < FILMS and all(row["error"] is None for row in rows)


def test_sigkill_of_the_command_ends_its_workers(films, tmp_path):
    out, log = tmp_path / "rows.jsonl", tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = start_and_wait_for_rows(films, out, stderr)
    try:
        process.send_signal(signal.SIGKILL)
        process.wait()
        left = wait_until_alone(process, process.pid)
    finally:
        kill_session(process.pid)
    assert not left, f"still running {GONE_WITHIN_S} s after kill -9 of the command: {left}"
    assert rows_in(out) >= 1
    text = log.read_text()  # the resource tracker, the last to end, removed the pool's semaphores quietly
    assert "leaked" not in text and "Traceback" not in text, text
