"""The heatmap overlay as the app sends it: the same PNG, written fast.

    HeatmapImage(...)   gr.Image for the answer's overlay: a PIL picture goes out as a PNG at zlib level 1

Gradio writes a PIL picture with Pillow's default zlib level (6): about 30 ms of every answer on the
2-core machine for the 384-512 px overlay, the largest step of the app's own work after the model's
(benchmarks/serving.py prints the breakdown). Level 1 gives the same pixels in about a quarter of the
time, in a file about a fifth larger (150 KB instead of 130). It stays a PNG, as the API promises
(README: `heatmap_path` is a PNG). The file goes where Gradio puts its own, named as Gradio names them
(a folder per hash of the bytes, `image.png`), in the app's upload folder: the upload sweeper deletes
it as before (ui/uploads.py).
"""

import io
import os
import tempfile
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from PIL import Image

COMPRESS_LEVEL = 1  # zlib's fastest: lossless all the same


class HeatmapImage(gr.Image):
    """An output gr.Image whose PIL pictures are written by save_png (other values: as gr.Image does)."""

    def postprocess(self, value):
        if isinstance(value, Image.Image):
            value = save_png(value, self.GRADIO_CACHE)
        return super().postprocess(value)

    def get_block_name(self) -> str:  # the browser shows it with Gradio's own image component
        return "image"

    def get_block_class(self) -> str:
        return "image"


def encode_png(picture: Image.Image) -> bytes:
    """The picture as PNG bytes, no metadata (the overlay carries none of the upload's)."""
    with io.BytesIO() as out:
        picture.save(out, "PNG", compress_level=COMPRESS_LEVEL)
        return out.getvalue()


def save_png(picture: Image.Image, folder) -> str:
    """Write the picture to `folder`/HASH/image.png (HASH: Gradio's hash of the bytes); returns its path.
    Written under a temporary name and renamed, so that a client fetching the same picture (two
    identical answers at once) never reads half a file."""
    data = encode_png(picture)
    target = Path(folder) / processing_utils.hash_bytes(data)
    target.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=target, prefix=".image.png.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(staging, target / "image.png")
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str((target / "image.png").resolve())
