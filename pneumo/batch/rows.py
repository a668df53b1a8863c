"""A file to its row, the same way in both engines of an archive run (pneumo/batch/run.py) and in the
plain `pneumo predict` (pneumo/cli.py).

The file is decoded in a sandboxed worker process (pneumo/inputs/sandbox.py, the
app's limits), then analysed in batches by pneumo.analysis.analyse_many; a
file that cannot be read or analysed becomes a row that says why (in the
command's words, pneumo.inputs.pixels.words_for). With a heatmaps folder, each
verdict's overlay (pneumo.overlay.picture, the picture the app shows) is
written there as a PNG and its row names the file (`heatmap_file`).
"""

import hashlib
import os
from pathlib import Path

from pneumo.batch.output import HEATMAP, error_row
from pneumo.inputs.decode import Decoded, InputError
from pneumo.inputs.pixels import COMMAND

BATCH = 16  # files per model call: the batch analyse_many is fastest at


class Screener:
    """A loaded model and a sandboxed decoder: paths in, rows out (both engines, and the plain command).
    Without `loaded`, this process's model on one thread (an archive run's worker)."""

    def __init__(self, loaded=None, heatmaps=None):
        from pneumo.inputs.sandbox import DecoderPool

        if loaded is None:
            from pneumo.model.loading import get_model

            # One core per screener: its model must not start a thread per core of the machine.
            os.environ.setdefault("PNEUMO_ONNX_THREADS", "1")
            loaded = get_model()
        self.loaded = loaded
        self.heatmaps = heatmaps
        self.decoders = DecoderPool(size=1)

    def __call__(self, paths) -> list[dict]:
        return rows_for([(path, decode_one(self.decoders.decode, path)) for path in paths], self.loaded,
                        self.heatmaps)

    def close(self) -> None:
        self.decoders.close()


def decode_one(decode, path):
    """A Decoded, or the error row that says why the file could not be read."""
    try:
        return decode(path)
    except InputError as error:
        return error_row(path, error.words_for(COMMAND))
    except Exception as error:  # one odd file must not stop the run
        return error_row(path, f"could not be read ({type(error).__name__})")


def rows_for(batch, loaded, heatmaps=None) -> list[dict]:
    """[(path, Decoded or error row)] -> rows, in order; the model sees the decoded ones in one call.
    `heatmaps`: a folder for the verdicts' overlays (None: none written, `heatmap_file` null)."""
    from pneumo.analysis import analyse_many

    decoded = [(path, item) for path, item in batch if isinstance(item, Decoded)]
    try:
        analyses = analyse_many([item for _, item in decoded], loaded, batch_size=BATCH)
    except Exception:  # one image that breaks the batch: find it, keep the others
        analyses = [_analyse_alone(item, loaded) for _, item in decoded]
    rows = {path: (_row(path, analysis, heatmaps) if not isinstance(analysis, str) else error_row(path, analysis))
            for (path, _), analysis in zip(decoded, analyses)}
    return [rows.get(path, item) for path, item in batch]


def _row(path, analysis, heatmaps) -> dict:
    return {"path": path, "error": None, **analysis.as_dict(),
            HEATMAP: write_heatmap(heatmaps, path, analysis) if heatmaps else None}


def heatmap_name(path) -> str:
    """The overlay's file name for `path`: its name, and a hash of its absolute path, since two folders
    of an archive may hold files of the same name ("a/1.dcm", "b/1.dcm" -> "1-3f2a9c01.png", "1-8d0e4b7a.png")."""
    digest = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{Path(path).stem}-{digest}.png"


def write_heatmap(folder, path, analysis) -> str | None:
    """The overlay of a verdict as FOLDER/heatmap_name(path), written whole (a temporary name, then renamed);
    its path, or None for a file without a verdict (no heatmap)."""
    from pneumo.overlay import picture

    image = picture(analysis)
    if image is None:
        return None
    target = os.path.join(folder, heatmap_name(path))
    temporary = target + ".tmp"
    image.save(temporary, "PNG")
    os.replace(temporary, target)
    return target


def _analyse_alone(item, loaded):
    from pneumo.analysis import analyse_many

    try:
        return analyse_many([item], loaded)[0]
    except Exception as error:
        return f"could not be analysed ({type(error).__name__})"
