"""The Ray engine of archive runs (`pneumo predict --out FILE --engine ray`).

Ray Data spreads the paths over a pool of actors; each actor holds one
loaded model and one sandboxed decoder (pneumo.batch.rows.Screener, as each
process of the local engine does) and turns a batch of paths into rows, so
both engines give the same rows. The rows stream back to this process, which appends them to
--out as they arrive: a killed run resumes as a local one does.

Where the model comes from on each node: every actor calls get_model(), as
the app does, with this process's PNEUMO_* variables (passed on in Ray's
runtime environment). So the bundled model comes with the installed package,
PNEUMO_MODEL_REPO is downloaded by each node from the Hub (checked by its
sha256, then cached) and PNEUMO_MODEL_PATH must exist at that path on every
node. The files to screen, likewise, must be at their paths on every node
(a shared or network filesystem).

Ray is optional: `pip install '.[ray]'` in the checkout.
"""

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from pneumo import install_hint
from pneumo.batch.rows import BATCH, Screener

RAY_MISSING = "--engine ray needs Ray: " + install_hint("ray")
CHECKOUT = Path(__file__).resolve().parents[2]


def screen_with_ray(paths, write, workers, address=None, heatmaps=None) -> None:
    """Screen `paths` on `workers` actors; `write` gets each batch of rows as it arrives. `heatmaps`: the folder
    the actors write the verdicts' overlays to (at that path on every node, as the films are)."""
    if not paths:
        return
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # address None starts a local Ray for this command (and stops it at the end).
        ray.init(address=address, num_cpus=None if address else workers, runtime_env=_runtime_env(),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    warnings.filterwarnings("ignore", module=r"ray\.")  # Ray Data's tuning advice is not for the command's user
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command draws its own
        context.execution_options.verbose_progress = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Blocks of a few batches each, enough for every actor to have work.
        blocks = max(1, min(-(-len(paths) // BATCH), 4 * workers))
        dataset = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=blocks)
        rows = dataset.map_batches(RayScreener, batch_size=BATCH, batch_format="numpy", num_cpus=1,
                                   fn_constructor_kwargs={"heatmaps": heatmaps},
                                   compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)))
        for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
            write([json.loads(row) for row in batch["row"]])
    finally:
        if started_here:
            ray.shutdown()


class RayScreener:
    """One Ray actor: pneumo.batch.rows.Screener (a model and a decoder), kept for all its batches."""

    def __init__(self, heatmaps=None):
        self.screener = Screener(heatmaps=heatmaps)

    def __call__(self, batch: dict) -> dict:
        rows = self.screener([str(path) for path in batch["path"]])
        # JSON text: the rows' nested fields vary, which Arrow columns would not take.
        return {"row": np.array([json.dumps(row) for row in rows], dtype=object)}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError:
        raise RuntimeError(RAY_MISSING) from None
    return ray


def _runtime_env() -> dict:
    """The model's PNEUMO_* settings for every actor; from a source checkout, also the code."""
    env = {key: value for key, value in os.environ.items() if key.startswith("PNEUMO_")}
    if "site-packages" not in str(CHECKOUT):  # not installed: actors import pneumo from this checkout
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    return {"env_vars": env}
