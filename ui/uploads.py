"""What the app accepts as an upload, and how it forgets uploads.

    UploadOnlyImage, UploadOnlyFile   gr.Image / gr.File that take files uploaded to this app only
    uploaded_path(upload)             the one uploaded file of a request, checked
    discard_upload(path)              delete it when the request ends (its folder: the sweeper)
    UploadSweeper(blocks).start()     every few seconds, delete whatever is older than a minute

Why the components: a request may name any FileData `path`. For an http(s)
URL, Gradio 6.31 downloads the whole body into its cache before the event
function runs (Block.async_move_resource_to_block_cache, called by
processing_utils.async_move_files_to_cache in Blocks.preprocess_data, also
with preprocess=False), with no size cap. That method is the one place every
input file passes, so these subclasses refuse there: URLs, folders and
anything outside Gradio's upload folder, before a byte is fetched.

Why the sweeper: Gradio's own cache sweep (`delete_cache`) stops for the
life of the process once it meets a folder (os.remove raises
IsADirectoryError), and nothing ever deletes the partial file of an aborted
upload (a DICOM's header, with the patient's name, comes first). The sweeper
replaces it: it walks the whole upload folder (uploads, partial uploads and
the heatmaps Gradio writes there) and catches its own errors, so no request
can stop it. The app turns `delete_cache` off.
"""

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import gradio as gr
from gradio_client.utils import is_http_url_like

from pneumo.settings import setting

KEEP_S = setting("PNEUMO_KEEP_UPLOADS_S")  # how long any file may stay
SWEEP_EVERY_S = setting("PNEUMO_SWEEP_EVERY_S")

ONLY_UPLOADS = "Only files uploaded to this app can be analysed (no links, no server paths). Please upload the file."
ONE_FILE = "Please send exactly one file per request."
GONE = "Uploads are deleted after each analysis: please upload the image again."
# A client that sends text (a URL, a path) where the file goes: Gradio's own validation would refuse it
# without a word ("has not enabled verbose error reporting").
NOT_A_FILE = ("The API takes the X-ray file itself, not text: send it with gradio_client.handle_file(\"xray.jpeg\"). "
              "A URL is not fetched: download the file first (the MCP tool takes URLs).")
# What the API page and Client.view_api() say of the input, instead of Gradio's "A local filepath or publicly
# available URL", which this app refuses.
INPUT_DESCRIPTION = ("The X-ray file (an image or a DICOM file), uploaded with gradio_client.handle_file(path). "
                     "URLs and server paths are refused: download the file first.")


def upload_folder() -> Path:
    return Path(gr.utils.get_upload_folder()).resolve()


def check_uploaded(path) -> Path:
    """`path` as a regular file inside the upload folder, or gr.Error. Checked
    on the string before the file system is touched, so a URL is never fetched."""
    if not isinstance(path, (str, Path)) or not str(path) or is_http_url_like(str(path)):
        raise gr.Error(ONLY_UPLOADS, print_exception=False)
    file = Path(path).resolve()
    if upload_folder() not in file.parents:
        raise gr.Error(ONLY_UPLOADS, print_exception=False)
    if not file.is_file():
        raise gr.Error(GONE if not file.exists() else ONLY_UPLOADS, print_exception=False)
    return file


class _FilesOnly:
    """A component's data model (gr.Image's ImageData, gr.File's FileData) that refuses text with a message
    of its own. Not a subclass: Gradio's API description (and the client's file handling) keeps the model's
    own schema and name; only model_validate, where Gradio checks a request's value, is intercepted."""

    def __init__(self, model):
        self.model = model

    def model_validate(self, value, *args, **kwargs):
        if isinstance(value, str):
            raise gr.Error(NOT_A_FILE, print_exception=False)
        return self.model.model_validate(value, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


class _UploadsOnly:
    """Mixin for Gradio input components: refuse before Gradio copies or downloads."""

    shown_as = ""  # the Gradio component the browser shows: "image" or "file"

    @property
    def data_model(self):
        model = self.__dict__.get("_data_model") or next(
            vars(c)["data_model"] for c in type(self).__mro__[1:] if isinstance(vars(c).get("data_model"), type))
        return _FilesOnly(model)

    @data_model.setter
    def data_model(self, model):  # gr.File sets its model in __init__
        self._data_model = model

    def api_info(self):
        info = super().api_info()
        info["additional_description"] = INPUT_DESCRIPTION
        return info

    def get_block_name(self) -> str:
        return self.shown_as

    def get_block_class(self) -> str:
        return self.shown_as

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        if url_or_file_path is None:
            return None
        check_uploaded(url_or_file_path)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def move_resource_to_block_cache(self, url_or_file_path):
        if url_or_file_path is None:
            return None
        if not _is_app_file(url_or_file_path):  # the app's own examples are copied this way at start-up
            check_uploaded(url_or_file_path)
        return super().move_resource_to_block_cache(url_or_file_path)


class UploadOnlyImage(_UploadsOnly, gr.Image):
    shown_as = "image"


class UploadOnlyFile(_UploadsOnly, gr.File):
    shown_as = "file"


def uploaded_path(upload) -> Path:
    """The event's raw file data (preprocess=False) -> the checked path of its one file."""
    if upload is None or upload == "":
        raise gr.Error("Please upload a chest X-ray first.", print_exception=False)
    if isinstance(upload, (list, tuple)):
        raise gr.Error(ONE_FILE, print_exception=False)
    path = upload.get("path") if isinstance(upload, dict) else upload
    return check_uploaded(path)


# The app's own files (its examples), and (size, sha256) of them: their copies in the upload folder stay.
_APP_FILES: set = set()
_KEPT: set = set()


def keep_copies_of(paths) -> None:
    """The app's example files: Gradio may copy them in (at start-up), and never
    deletes its copies, which it serves for the next click."""
    _APP_FILES.update(Path(path).resolve() for path in paths)
    _KEPT.update(_fingerprint(Path(path)) for path in paths)


def _is_app_file(path) -> bool:
    return isinstance(path, (str, Path)) and not is_http_url_like(str(path)) and Path(path).resolve() in _APP_FILES


def _fingerprint(path: Path) -> tuple:
    return path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()


def _is_kept(path) -> bool:
    try:
        return bool(_KEPT) and os.path.isfile(path) and any(size == os.path.getsize(path) for size, _ in _KEPT) \
            and _fingerprint(Path(path)) in _KEPT
    except OSError:
        return False


def discard_upload(path) -> None:
    """Delete Gradio's temporary copy of an upload (uploads are medical data).

    Its folder stays for the sweeper: Gradio names it by a hash of the bytes,
    so identical uploads (two empty files) share it, and removing it here
    raced with the next one's mkdir-then-rename (a 500 on /gradio_api/upload
    under load). The sweeper only takes folders untouched for KEEP_S."""
    file = Path(path).resolve()
    if upload_folder() not in file.parents or _is_kept(file):
        return  # not an upload (a direct Python call, an example's copy): never delete it
    with contextlib.suppress(OSError):
        file.unlink(missing_ok=True)


def sweep(folder: Path, keep_s: float) -> int:
    """Delete every file, link and empty folder under `folder` untouched for
    `keep_s` seconds; returns how many. Never raises for one entry."""
    removed, cutoff = 0, time.time() - keep_s
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            removed += _remove_if_old(os.path.join(root, name), cutoff, os.unlink)
        for name in dirs:
            removed += _remove_if_old(os.path.join(root, name), cutoff, os.rmdir)
    return removed


def _remove_if_old(path: str, cutoff: float, remove) -> int:
    try:
        if os.lstat(path).st_mtime < cutoff and not _is_kept(path):
            remove(path)
            return 1
    except OSError:  # gone already, not empty, not ours to delete: next round
        pass
    return 0


class UploadSweeper(threading.Thread):
    """A daemon thread: sweep the upload folder every SWEEP_EVERY_S seconds."""

    def __init__(self, blocks=None, keep_s: float = KEEP_S, every_s: float = SWEEP_EVERY_S):
        super().__init__(name="upload-sweeper", daemon=True)
        self.blocks, self.keep_s, self.every_s = blocks, keep_s, every_s
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sweep_once()

    def sweep_once(self) -> None:
        try:
            sweep(upload_folder(), self.keep_s)
            self._forget_deleted()
        except Exception as error:  # the sweeper must outlive anything a request can do
            print(f"upload sweeper: {type(error).__name__}; retrying in {self.every_s:.0f} s", flush=True)

    def stop(self) -> None:
        self._stop.set()

    def _forget_deleted(self) -> None:
        """Gradio remembers every file it cached; its own sweep pruned those sets, ours must."""
        for remembered in getattr(self.blocks, "temp_file_sets", []):
            remembered.difference_update([path for path in list(remembered) if not os.path.lexists(path)])
