"""The app keeps uploads in a folder of its own and its sweeper empties only that one:
another Gradio app's files in Gradio's shared default folder (<temp>/gradio) survive."""

import os
import time

from tests.app_server import left_in_temp, running_app
from tests.conftest import require_import, synthetic_xray

gradio_client = require_import("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

WAIT_S = 120  # upper bound for the sweeper to act (never a speed target)


def old_file(path, content=b"another app's file"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    an_hour_ago = time.time() - 3600
    for entry in (path, path.parent):
        os.utime(entry, (an_hour_ago, an_hour_ago))
    return path


def test_other_apps_files_survive_start_up_and_the_sweeper(tiny_run, tmp_path):
    temp = tmp_path / "tmp"
    other_app = old_file(temp / "gradio" / "0123abcd" / "their-upload.png")  # Gradio's shared default folder
    earlier_run = old_file(temp / "pneumonia-detector" / "4567cdef" / "left-over.png")
    env = {"GRADIO_TEMP_DIR": None, "TMPDIR": str(temp), "PNEUMO_KEEP_UPLOADS_S": "5", "PNEUMO_SWEEP_EVERY_S": "0.5"}
    with running_app(tiny_run, tmp_path, extra_env=env) as app:
        assert app.temp_dir == temp / "pneumonia-detector"
        assert not earlier_run.exists(), "the app's own leftovers are cleared at start-up"
        assert (app.temp_dir.stat().st_mode & 0o777) == 0o700, "uploads are medical data: the owner's only"
        good = tmp_path / "xray.png"
        synthetic_xray("bacteria", seed=3, size=128).save(good)
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))
        result, heatmap = client.predict(handle_file(good), api_name="/predict")
        assert result["scope"] == "ok" and heatmap is not None
        # The heatmap went to the app's own folder (kept 5 s), and the sweeper takes it away ...
        assert left_in_temp(app), "nothing of the request reached the app's own folder"
        deadline = time.monotonic() + WAIT_S
        while left_in_temp(app, folders=True):
            assert time.monotonic() < deadline, "the sweeper never emptied the app's own folder"
            time.sleep(0.2)
    # ... while another app's file, an hour old, is still there.
    assert other_app.read_bytes() == b"another app's file"


def test_a_finished_upload_leaves_its_shared_folder_to_the_sweeper(tmp_path, monkeypatch):
    """Gradio names an upload's folder by its bytes: two identical uploads share it. Removing it
    when one request ends raced with the other's mkdir-then-rename (a 500 under load)."""
    require_import("gradio")
    from ui.uploads import discard_upload, sweep

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    shared = tmp_path / "e3b0c442"  # the folder of every empty file
    first = shared / "empty-1.png"
    shared.mkdir()
    first.write_bytes(b"")
    # A second client's empty file is between Gradio's mkdir of `shared` and its rename into it.
    discard_upload(first)
    assert not first.exists() and shared.is_dir(), "the folder Gradio may be renaming into stays"
    assert sweep(tmp_path, keep_s=60) == 0, "a folder touched just now is not the sweeper's yet"
    assert sweep(tmp_path, keep_s=0) == 1 and not shared.exists(), "the sweeper takes it once untouched"
