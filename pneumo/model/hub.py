"""Fetch a run folder from a Hugging Face Hub model repo (into the HF cache).

`download_run(repo, revision)` returns the local folder and the commit it
came from, or raises `HubError` with a reason fit to show, so the caller can
fall back to the bundled model. The endpoint (HF_ENDPOINT), cache (HF_HOME)
and token (HF_TOKEN or `hf auth login`) are huggingface_hub's.
"""

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

from pneumo.model.run_folder import CONFIG, KERAS_MODEL, OPTIONAL, REQUIRED

# REQUIRED starts with config.json, fetched first: its folder is the snapshot.
# OPTIONAL: runs without the checks' files skip those checks; without the ONNX
# models, Keras serves.
# Seconds to wait for the Hub's answer about a file. huggingface_hub's own
# default (10 s, then ~24 s of retries when nothing is cached) would stall
# the app's start for half a minute when the Hub is down.
TIMEOUT = 5

log = logging.getLogger(__name__)


class HubError(Exception):
    """The run could not be fetched; the message says why."""


def download_run(repo: str, revision: str = "main") -> tuple[Path, str]:
    """(folder holding the run's files, full commit sha) for `repo` at
    `revision` (branch, tag or commit). Online, a branch is looked up each
    time and files come from the cache when already there; offline
    (HF_HUB_OFFLINE=1) or with the Hub unreachable, the cache alone answers."""
    from huggingface_hub import constants

    revision = revision or "main"
    cache_only = None  # why only the cache can answer, if it must
    if constants.HF_HUB_OFFLINE or _is_true(os.environ.get("HF_HUB_OFFLINE")):  # the env var may be set after import
        cache_only = "offline (HF_HUB_OFFLINE=1)"
    elif not _reachable(repo, revision):
        # What huggingface_hub itself does, minus its half-minute of retries.
        cache_only = f"the Hub at {constants.ENDPOINT} cannot be reached"
        log.warning("%s: looking for %s@%s in the cache", cache_only, repo, revision)
    config = _download(repo, CONFIG, revision, cache_only)
    folder = config.parent
    commit = folder.name  # the cache's snapshot folder is named by the commit sha
    for filename in REQUIRED[1:] + OPTIONAL:
        # By commit, not by branch: all files from one version even if the branch moves meanwhile.
        _download(repo, filename, commit, cache_only, optional=filename in OPTIONAL)
    for filename in REQUIRED:
        _check(folder / filename, f"{repo}@{commit[:12]}")
    return folder, commit


def _reachable(repo, revision):
    """One quick HEAD without retries. False when the Hub cannot be reached;
    a definite answer from the Hub (not found, no access) raises HubError."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo, CONFIG, revision=revision), timeout=TIMEOUT)
        return True
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code >= 500:
            return False
        raise HubError(_reason(e, repo, revision, CONFIG)) from e
    except Exception as e:  # connection refused, timeout, DNS: the transport's own errors
        log.debug("HEAD failed: %r", e)
        return False


def _download(repo, filename, revision, cache_only, optional=False):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=bool(cache_only),
                                    etag_timeout=TIMEOUT))
    except (LocalEntryNotFoundError, EntryNotFoundError) as e:
        if optional:
            return None
        raise HubError(_reason(e, repo, revision, filename, cache_only)) from e
    except Exception as e:  # HTTP answers, and the transport's errors (a dropped connection): never crash the app
        raise HubError(_reason(e, repo, revision, filename, cache_only)) from e


def _reason(e, repo, revision, filename, cache_only=None):
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo}@{revision}"
    if isinstance(e, GatedRepoError):
        return f"{repo} is gated: accept its conditions on the Hub and give a token (HF_TOKEN)"
    if isinstance(e, RepositoryNotFoundError):
        return (f"model repo {repo} not found at {constants.ENDPOINT} "
                "(or it is private and no token with access was given)")
    if isinstance(e, RevisionNotFoundError):
        return f"revision {revision!r} not found in {repo}"
    if isinstance(e, RemoteEntryNotFoundError):
        return f"{filename} not found in {where}: not a pneumo run folder"
    if isinstance(e, LocalEntryNotFoundError):
        return (f"{cache_only or 'the Hub cannot be reached'} and {filename} of {where} "
                f"is not in the cache ({constants.HF_HUB_CACHE})")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        return f"the Hub answered {status} for {filename} of {where}: {str(e).splitlines()[0]}"
    return f"could not fetch {filename} of {where}: {e}"


def _check(path, where):
    """The file in the cache is the one the Hub announced, and readable.

    huggingface_hub checks the size of a download, not its content. The cache
    names each blob by the Hub's etag: the sha256 of an LFS file, the git blob
    sha1 of a small one. A mismatch means a corrupt download or cache: the
    blob is removed so that the next start downloads it again."""
    blob = Path(os.path.realpath(path))
    data = blob.read_bytes()
    etag = blob.name
    if len(etag) == 64:
        actual = hashlib.sha256(data).hexdigest()
    elif len(etag) == 40:
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    else:
        actual = etag  # no symlinks in this cache (Windows): nothing to compare with
    if actual != etag:
        blob.unlink(missing_ok=True)
        Path(path).unlink(missing_ok=True)
        raise HubError(f"{path.name} of {where} failed its integrity check (content hash {actual[:12]}..., "
                       f"the Hub announced {etag[:12]}...); the corrupt copy was removed from the cache")
    if path.suffix == ".json":
        try:
            json.loads(data)
        except ValueError as e:
            raise HubError(f"{path.name} of {where} is not valid JSON: {e}") from e
    elif path.name == KERAS_MODEL and not zipfile.is_zipfile(blob):
        raise HubError(f"{path.name} of {where} is not a .keras file (not a zip archive)")


def _is_true(value):
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}
