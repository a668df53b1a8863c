"""pytest fixtures for a local Hugging Face Hub: olah (pull) behind
tests/hub_server.py (push), on free 127.0.0.1 ports, for the real client.

Use from conftest.py with `from tests.hub_fixtures import *`.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import stop

__all__ = ["LocalHub", "local_hub", "hub_repo", "free_port", "hub_env"]

SERVER = Path(__file__).with_name("hub_server.py")
OLAH = Path(sys.executable).with_name("olah-cli")


@dataclass
class LocalHub:
    endpoint: str
    mirrors: Path

    def git_repo(self, repo_id):
        return self.mirrors / "models" / repo_id

    def corrupt_downloads_of(self, repo_id, filename):
        """From now on, downloads of `filename` from `repo_id` arrive with one byte flipped."""
        query = urllib.parse.urlencode({"repo": repo_id, "file": filename})
        request = urllib.request.Request(f"{self.endpoint}/_test/corrupt?{query}", method="POST")
        urllib.request.urlopen(request, timeout=5).close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port, process, name, timeout=60):
    # A TCP connect, not `GET /`: olah's front page answers 500.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout} s")


def hub_env(endpoint, hf_home, **extra):
    """Environment for a subprocess using the Hub at `endpoint` with its own cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False", **extra}


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """olah in offline mirror mode plus the write-API server in front of it;
    one session for all tests (each test uses its own repo names)."""
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    (mirrors / "models").mkdir(parents=True)
    olah_port, hub_port = free_port(), free_port()
    (root / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {olah_port}\nrepos-path = "{root / "repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        # olah's own URLs (redirects, LFS links) must point at the front server.
        f'mirror-netloc = "127.0.0.1:{hub_port}"\nmirror-lfs-netloc = "127.0.0.1:{hub_port}"\n'
        "[accessibility]\noffline = true\n"  # without it olah answers 504 to everything
    )
    log = open(root / "servers.log", "w")
    olah = subprocess.Popen([str(OLAH), "-c", "olah.toml", "--log-path", str(root / "logs")],
                            cwd=root, stdout=log, stderr=subprocess.STDOUT)  # olah writes ./logs
    hub = subprocess.Popen([sys.executable, str(SERVER), "--port", str(hub_port), "--mirrors", str(mirrors),
                            "--upstream", f"http://127.0.0.1:{olah_port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(olah_port, olah, "olah")
        _wait_for_port(hub_port, hub, "hub_server")
        yield LocalHub(f"http://127.0.0.1:{hub_port}", mirrors)
    finally:
        for process in (hub, olah):
            stop(process, timeout=10)
        log.close()


@pytest.fixture
def hub_repo():
    """A fresh repo id, so tests sharing the session's Hub never collide."""
    return f"acme/pneumo-{uuid.uuid4().hex[:8]}"
