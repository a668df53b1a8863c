"""`python app.py` as a subprocess on a free local port, for end-to-end tests."""

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT
from tests.processes import stop

START_TIMEOUT_S = 300  # import gradio + TensorFlow, load and warm up the model, on a busy machine


@dataclass
class App:
    url: str
    temp_dir: Path  # GRADIO_TEMP_DIR: where uploads land
    log: Path  # the server's stdout and stderr
    pid: int = 0  # the server process


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(model_path, workdir: Path, args=(), extra_env: dict | None = None):
    """Start `app.py ARGS` serving `model_path` (None: the app's own choice), with `extra_env` added to the
    environment (a None value removes the variable: GRADIO_TEMP_DIR None leaves the app its own upload
    folder, under TMPDIR); yield an App; stop it afterwards."""
    port = free_port()
    temp_dir, log = workdir / "gradio_tmp", workdir / "app.log"
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp_dir),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    env.pop("GRADIO_SHARE", None)
    env.pop("GRADIO_MCP_SERVER", None)
    env.update(extra_env or {})
    env = {name: value for name, value in env.items() if value is not None}
    if "GRADIO_TEMP_DIR" not in env:
        temp_dir = Path(env.get("TMPDIR", "/tmp")) / "pneumonia-detector"  # pneumo.settings.OWN_UPLOAD_FOLDER
    if model_path is not None:
        env["PNEUMO_MODEL_PATH"] = str(model_path)
        env.pop("PNEUMO_MODEL_REPO", None)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield App(url, temp_dir, log, process.pid)
    finally:
        stop(process)


def left_in_temp(app: App, folders=False) -> list[Path]:
    """Files (and, with `folders`, folders) in the app's temp folder, less Gradio's start-up
    copies of the clickable examples and the folders that hold them: those are the app's own."""
    def sha256(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    examples = {sha256(path) for path in (ROOT / "examples").glob("*.jpeg")}
    kept = [path for path in app.temp_dir.rglob("*") if path.is_file() and sha256(path) in examples]
    holders = {parent for path in kept for parent in path.parents}
    return [path for path in app.temp_dir.rglob("*") if path not in kept and path not in holders
            and (path.is_file() or (folders and path.is_dir()))]
