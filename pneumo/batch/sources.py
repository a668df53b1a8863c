"""What an archive run screens: files, folders walked recursively, manifests.

    sources = list_sources(["study/", "extra.dcm", "list.csv"])
    sources.files     # the files to screen, in order, each once
    sources.skipped   # files found in folders that are neither images nor DICOM

A folder stands for every image and DICOM file under it (hidden files and
folders left out); other files are skipped and counted, never read further
than their first 132 bytes (a DICOM export often has no suffix: it is
recognised by "DICM" at byte 128). A named file is always screened: when it
cannot be read its row says why. A manifest lists paths: a `.csv` with a
`path` column (so an earlier run's CSV output works as one) or a `.txt` /
`.lst`, one path a line (blank lines and `#` comments skipped); relative
paths are relative to the manifest's folder.
"""

import csv
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom"})
MANIFEST_SUFFIXES = frozenset({".csv", ".txt", ".lst"})
DICOM_MAGIC_AT, DICOM_MAGIC = 128, b"DICM"


class SourceError(Exception):
    """A source that does not exist or a manifest that cannot be read; the message says which."""


@dataclass
class Sources:
    files: list[str]
    skipped: int


def list_sources(sources, missing_ok=False) -> Sources:
    """`missing_ok`: a path that does not exist is listed as a file (its row then says so) instead of
    refused (the plain `pneumo predict`, whose other files still run)."""
    files, seen, skipped = [], set(), 0
    for source in map(str, sources):
        found, not_images = _expand(source, missing_ok)
        skipped += not_images
        for path in found:
            if path not in seen:  # a file named twice is screened once
                seen.add(path)
                files.append(path)
    return Sources(files, skipped)


def _expand(source: str, missing_ok=False) -> tuple[list[str], int]:
    path = Path(source)
    if path.is_dir():
        return _walk(path)
    if not path.exists():
        if missing_ok:
            return [os.path.normpath(source)], 0
        raise SourceError(f"{source}: no such file or folder")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _manifest(path), 0
    return [os.path.normpath(source)], 0


def _walk(folder: Path) -> tuple[list[str], int]:
    files, skipped = [], 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.normpath(os.path.join(root, name))
            if _is_image(path):
                files.append(path)
            else:
                skipped += 1
    return files, skipped


def _is_image(path: str) -> bool:
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as file:
            head = file.read(DICOM_MAGIC_AT + len(DICOM_MAGIC))
    except OSError:
        return False
    return head[DICOM_MAGIC_AT:] == DICOM_MAGIC


def _manifest(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: the manifest cannot be read ({error})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if "path" not in (reader.fieldnames or []):
            raise SourceError(f"{path}: a CSV manifest needs a `path` column")
        entries = [row["path"] for row in reader if row.get("path")]
    else:
        entries = [line.strip() for line in text.splitlines()]
        entries = [line for line in entries if line and not line.startswith("#")]
    return [os.path.normpath(path.parent / entry) for entry in entries]
