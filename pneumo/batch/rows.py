"""A file to its row, the same way in both engines of an archive run (pneumo/batch/run.py).

The file is decoded in a sandboxed worker process (pneumo/inputs/sandbox.py, the
app's limits), then analysed in batches by pneumo.analysis.analyse_many; a
file that cannot be read or analysed becomes a row that says why.
"""

import os

from pneumo.batch.output import error_row
from pneumo.inputs.decode import Decoded, InputError

BATCH = 16  # files per model call: the batch analyse_many is fastest at


class Screener:
    """A loaded model and a sandboxed decoder: paths in, rows out (both engines)."""

    def __init__(self):
        from pneumo.model.loading import get_model
        from pneumo.inputs.sandbox import DecoderPool

        # One core per screener: its model must not start a thread per core of the machine.
        os.environ.setdefault("PNEUMO_ONNX_THREADS", "1")
        self.loaded = get_model()
        self.decoders = DecoderPool(size=1)

    def __call__(self, paths) -> list[dict]:
        return rows_for([(path, decode_one(self.decoders.decode, path)) for path in paths], self.loaded)


def decode_one(decode, path):
    """A Decoded, or the error row that says why the file could not be read."""
    try:
        return decode(path)
    except InputError as error:
        return error_row(path, str(error))
    except Exception as error:  # one odd file must not stop the run
        return error_row(path, f"could not be read ({type(error).__name__})")


def rows_for(batch, loaded) -> list[dict]:
    """[(path, Decoded or error row)] -> rows, in order; the model sees the decoded ones in one call."""
    from pneumo.analysis import analyse_many

    decoded = [(path, item) for path, item in batch if isinstance(item, Decoded)]
    try:
        analyses = analyse_many([item for _, item in decoded], loaded, batch_size=BATCH)
    except Exception:  # one image that breaks the batch: find it, keep the others
        analyses = [_analyse_alone(item, loaded) for _, item in decoded]
    rows = {path: ({"path": path, "error": None, **analysis.as_dict()} if not isinstance(analysis, str)
                   else error_row(path, analysis)) for (path, _), analysis in zip(decoded, analyses)}
    return [rows.get(path, item) for path, item in batch]


def _analyse_alone(item, loaded):
    from pneumo.analysis import analyse_many

    try:
        return analyse_many([item], loaded)[0]
    except Exception as error:
        return f"could not be analysed ({type(error).__name__})"
