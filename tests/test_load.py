"""The app under load: 16 gradio_client clients at once, good and bad files mixed.

Nothing is timed here (benchmarks/serving.py measures speed): the test
checks that every request is answered, that bad files get their own
explanation and nothing else fails, that no upload stays behind, and that
the server's memory settles instead of growing with the requests served.
"""

import io
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.app_server import left_in_temp, running_app
from tests.conftest import require_import, synthetic_xray

gradio_client = require_import("gradio_client")
psutil = require_import("psutil")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

CLIENTS = 16
REQUESTS_PER_CLIENT = 6
# Memory the server may gain over a second, identical round of load once a
# first round has warmed it up (allocator caches, Gradio's state, logs).
RSS_TOLERANCE_MB = 120

# name -> the explanation the app must give, or None for a good file
FILES = {
    "good-bacteria.png": None,
    "good-normal.jpeg": None,
    "good-virus.png": None,
    "bad-text.png": "not an image",
    "bad-empty.png": "empty",
    "bad-truncated.jpeg": "truncated",
    "bad-tiny.png": "20 x 20 pixels",
}


def make_file(kind, seed, folder):
    """A fresh file of `kind` (a FILES key) whose name and bytes no other request shares.

    Gradio stores an upload under a hash of its bytes and the file name, and
    writes a heatmap under a hash of its bytes: byte-identical requests at the
    same moment share those files, and the app deletes each upload after use.
    Real uploads (different patients) differ, so each request here does too.
    """
    stem, suffix = kind.rsplit(".", 1)
    path = folder / f"{stem}-{seed}.{suffix}"

    def image_bytes(xray_kind, size, fmt):
        buffer = io.BytesIO()
        synthetic_xray(xray_kind, seed=seed, size=size).save(buffer, fmt)
        return buffer.getvalue()

    data = {
        "good-bacteria.png": lambda: image_bytes("bacteria", 128, "PNG"),
        "good-normal.jpeg": lambda: image_bytes("normal", 256, "JPEG"),
        "good-virus.png": lambda: image_bytes("virus", 200, "PNG"),
        "bad-text.png": lambda: f"Notes on patient {seed}, not an X-ray.\n".encode() * 20,
        "bad-empty.png": lambda: b"",
        "bad-truncated.jpeg": lambda: (lambda jpeg: jpeg[: len(jpeg) // 2])(image_bytes("normal", 256, "JPEG")),
        "bad-tiny.png": lambda: image_bytes("normal", 20, "PNG"),
    }[kind]()
    path.write_bytes(data)
    return path


def server_process(app):
    """The app.py process answering on the app's port."""
    port = int(app.url.rstrip("/").rsplit(":", 1)[1])
    for child in psutil.Process().children(recursive=True):
        try:
            connections = getattr(child, "net_connections", None) or child.connections  # psutil < 6
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in connections("tcp")):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no child process listens on port {port}")


def rss_mb(process):
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def load_round(url, folder, requests_per_client, first_seed):
    """Every client sends its requests one after another, all clients at once.
    Returns (client, request, kind, outcome) for each request, where outcome
    is the result dict or the AppError's message."""
    kinds = list(FILES)
    folder.mkdir(parents=True)

    def one_client(index):
        client = Client(url, verbose=False, download_files=str(folder / f"downloads{index}"))
        outcomes = []
        for request in range(requests_per_client):
            kind = kinds[(index + request) % len(kinds)]
            upload = make_file(kind, first_seed + index * requests_per_client + request, folder)
            try:
                result, heatmap = client.predict(handle_file(upload), api_name="/predict")
                outcomes.append((index, request, kind, result))
            except AppError as error:
                outcomes.append((index, request, kind, str(error)))
        return outcomes

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [outcome for outcomes in pool.map(one_client, range(CLIENTS)) for outcome in outcomes]


def check_outcomes(outcomes, requests_per_client):
    assert len(outcomes) == CLIENTS * requests_per_client  # no request lost
    assert {(c, r) for c, r, _, _ in outcomes} == {(c, r) for c in range(CLIENTS) for r in range(requests_per_client)}
    for _, _, name, outcome in outcomes:
        expected = FILES[name]
        if expected is None:
            assert isinstance(outcome, dict), f"{name}: {outcome}"
            assert outcome["label"] in ("NORMAL", "PNEUMONIA")
            assert sum(outcome["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        else:
            assert isinstance(outcome, str) and expected in outcome, f"{name}: {outcome}"


def test_sixteen_clients_good_and_bad_files(tiny_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("load_app")
    with running_app(tiny_run, workdir) as app:
        server = server_process(app)
        # Round 1 warms the server up; round 2 is the same load again and may not grow it much.
        check_outcomes(load_round(app.url, workdir / "round1", REQUESTS_PER_CLIENT, 1000), REQUESTS_PER_CLIENT)
        before = rss_mb(server)
        check_outcomes(load_round(app.url, workdir / "round2", REQUESTS_PER_CLIENT, 2000), REQUESTS_PER_CLIENT)
        after = rss_mb(server)
        print(f"server RSS {before:.0f} MB after the first round, {after:.0f} MB after the second")
        assert after - before <= RSS_TOLERANCE_MB, f"server RSS grew from {before:.0f} MB to {after:.0f} MB"
        # Under concurrency too, every upload is deleted: only the heatmaps sent back remain.
        left = left_in_temp(app)
        sent = {p.name for p in workdir.glob("round*/*.*")}
        assert sent and not [p for p in left if p.name in sent], left
        assert all(p.suffix == ".png" for p in left), left
        assert server.is_running()
