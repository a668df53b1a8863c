"""Which model serves, loaded once per process.

Order: PNEUMO_MODEL_PATH (a run folder or a model file inside one), then
PNEUMO_MODEL_REPO on the Hugging Face Hub (at PNEUMO_MODEL_REVISION, default
`main`), then the model bundled in this package. A Hub problem never stops
the app: it falls back to the bundled model and says why.
"""

import functools
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from pneumo.answers.adult import shipped_figures
from pneumo.model.predict import GRID
from pneumo.model.run_folder import (ADULT, ADULT_CHECK, ADULT_OPACITY, ANATOMY, BUNDLED_DIR, KERAS_MODEL, ONNX_REPORT, OOD, ORIENTATION, POPULATION,
                         REQUIRED, read_config)
from pneumo.model.runtime import ONNX_FLOAT, ONNX_INT8, load_runtime
from pneumo.settings import setting

log = logging.getLogger("pneumo")



@dataclass
class LoadedModel:
    runtime: object  # computes probabilities and maps (pneumo/model/runtime.py)
    config: dict  # the run folder's validated config.json
    identity: dict  # what the app and `pneumo info` show: where it came from, its figures, the runtime

    @functools.cached_property
    def ood_check(self):
        """The run folder's fitted feature check, or None (pneumo/checks/ood.py)."""
        from pneumo.checks.ood import FeatureCheck

        return self._fitted(FeatureCheck.load, OOD, lambda c: c.mean.shape == (self.runtime.channels,),
                            "the not-a-chest-X-ray check uses image statistics only")

    @functools.cached_property
    def population_check(self):
        """The run folder's fitted population check, or None (pneumo/checks/population.py)."""
        from pneumo.checks.population import PopulationCheck

        return self._fitted(PopulationCheck.load, POPULATION,  # on region features (pneumo/model/predict.py)
                            lambda c: c.coef.shape == (GRID * GRID * self.runtime.channels,), "no population check: no chest X-ray gets a verdict")

    @functools.cached_property
    def adult_head(self):
        """The run folder's adult answer if it met the shipping rule when fitted, else None (pneumo/answers/adult.py)."""
        from pneumo.answers.adult import AdultHead

        head = self._fitted(AdultHead.load, ADULT, lambda h: h.coef.shape == (2 * self._adult_channels(h),),
                            "adults get no verdict")
        return head if head is not None and head.shipped else None

    @functools.cached_property
    def adult_trunk(self):
        """The run folder's adult trunk (adult_trunk.int8.onnx), or None (pneumo/model/onnx_runtime.py);
        a branch continues this runtime's pass (pneumo/model/one_pass.py)."""
        from pneumo.model.onnx_runtime import load_adult_trunk

        try:
            return load_adult_trunk(Path(self.identity["path"]), self.runtime)
        except (ImportError, ValueError) as error:
            log.warning("%s: adults get no verdict from a head that reads it", error)
            return None

    @functools.cached_property
    def opacity_map(self):
        """Where on an adult film the opacity is (adult_opacity.npz, pneumo/answers/opacity.py), or None:
        adults' heatmaps are then the adult answer's Grad-CAM."""
        from pneumo.answers.opacity import OpacityMap

        head = self.adult_head
        if head is None or not head.trunk:
            return None
        return self._fitted(OpacityMap.load, ADULT_OPACITY,
                            lambda m: m.coef.shape == (2 * self._adult_channels(head),),
                            "adults' heatmaps are the adult answer's Grad-CAM")

    @functools.cached_property
    def adult_check(self):
        """The adult answer's own feature check (adult_check.npz, pneumo/checks/scope.py `adult_scope`), or None."""
        from pneumo.checks.ood import FeatureCheck

        head = self.adult_head
        if head is None:
            return None
        return self._fitted(lambda folder: FeatureCheck.load(folder, ADULT_CHECK), ADULT_CHECK,
                            lambda c: c.mean.shape == (2 * self._adult_channels(head),),
                            "adult films get the adult answer without it")

    def _adult_channels(self, head):
        """The channels of the maps that `head` reads: the adult trunk's, or the children's model's."""
        if not head.trunk:
            return self.runtime.channels
        return self.adult_trunk.channels if self.adult_trunk is not None else -1

    @functools.cached_property
    def segmenter(self):
        """The lungs and heart (pneumo/anatomy/segmenter.py): the run folder's anatomy.onnx, else the bundled one's;
        None only where neither can load (the lung fields then come from brightness profiles)."""
        from pneumo.anatomy.segmenter import Segmenter, bundled_segmenter

        own = self._fitted(Segmenter.load, ANATOMY, lambda s: True, "the bundled model's lungs and heart are used")
        return own or bundled_segmenter()

    @functools.cached_property
    def orientation_check(self):
        """The run folder's turned-or-inverted-film check, or None (pneumo/inputs/orientation.py)."""
        from pneumo.inputs.orientation import OrientationCheck

        return self._fitted(OrientationCheck.load, ORIENTATION, lambda c: True, "films are analysed as they come")

    def _fitted(self, load, name, fits_this_model, without):
        """load(run folder), or None: absent, unreadable or fitted for another model. A broken
        file must not stop serving, so it only costs that check (`without` says what follows)."""
        try:
            fitted = load(self.identity["path"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("%s unreadable (%s): %s", name, error, without)
            return None
        if fitted is not None and not fits_this_model(fitted):
            log.warning("%s was fitted for another model: %s", name, without)
            return None
        return fitted


def load_model(path=None, repo=None, revision=None, runtime=None) -> LoadedModel:
    """Load from `path`, else from the Hub `repo`, else the bundled model.
    `runtime`: a PNEUMO_RUNTIME value; default: that variable, else auto."""
    if path:
        return _load_folder(Path(path), runtime, source="path")
    if repo:
        from pneumo.model.hub import HubError, download_run

        revision = revision or "main"
        try:
            folder, commit = download_run(repo, revision)
            return _load_folder(folder, runtime, source="hub", repo=repo, revision=revision, commit=commit)
        except (HubError, OSError, ValueError) as error:
            reason = f"could not load {repo}@{revision} from the Hub: {error}"
            log.warning("%s; serving the bundled model instead", reason)
            return _load_folder(BUNDLED_DIR, runtime, source="bundled", fallback_reason=reason)
    return _load_folder(BUNDLED_DIR, runtime, source="bundled")


def load_in_background() -> threading.Thread:
    """Start get_model() in a thread, so that the app imports Gradio meanwhile:
    the model's load is mostly hashing and ONNX Runtime's session set-up,
    native code that runs outside the GIL. Join the thread, then call
    get_model(): it returns the loaded model, or raises what loading raised."""

    def load():
        try:
            get_model()
        except Exception:  # the caller's own get_model() raises it again, where it can be handled
            pass

    thread = threading.Thread(target=load, name="pneumo-model-load", daemon=True)
    thread.start()
    return thread


@functools.cache
def get_model() -> LoadedModel:
    """The process's model, chosen by the PNEUMO_MODEL_* environment variables."""
    return load_model(setting("PNEUMO_MODEL_PATH"), setting("PNEUMO_MODEL_REPO"), setting("PNEUMO_MODEL_REVISION"))


def _load_folder(folder, runtime, source, repo=None, revision=None, commit=None, fallback_reason=None):
    """A run folder (or a model file inside one) -> LoadedModel."""
    if not folder.exists():  # a typo in PNEUMO_MODEL_PATH: say so, not which files it lacks
        where = " (PNEUMO_MODEL_PATH)" if source == "path" and Path(setting("PNEUMO_MODEL_PATH") or "") == folder else ""
        raise FileNotFoundError(f"{folder}{where} does not exist: it must name a training run folder "
                                f"(with {' and '.join(REQUIRED)}) or a model file inside one")
    folder = folder.parent if folder.is_file() else folder
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} needs {' and '.join(REQUIRED)} (a training run folder); "
                                f"missing {', '.join(missing)}")
    config = read_config(folder)
    sha256 = sha256_of(folder / KERAS_MODEL)
    model = load_runtime(folder, config, sha256, choice=runtime)
    identity = {
        "source": source,
        "path": str(folder),
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "sha256": sha256,
        "runtime": model.name,
        "name": config.get("name"),
        "classes": config["classes"],
        "threshold": config["threshold"],
        "image_size": config["image_size"],
        "metrics": runtime_figures(folder, model.name, sha256, config["threshold"]) or config.get("validation", {}),
        "fallback_reason": fallback_reason,
        "adult": None,
    }
    log.info("model %s from %s (sha256 %s) on %s", identity["name"], source, sha256[:12], model.name)
    loaded = LoadedModel(model, config, identity)
    # The panel and `pneumo info` describe the adult answer only when it serves: its head loads, met the
    # shipping rule and fits its trunk (a folder that lost adult_trunk.int8.onnx, or whose trunk has other
    # channels, serves adults no verdict). The trunk's session is made here, once, instead of at the first adult film.
    identity["adult"] = shipped_figures(folder, loaded.adult_head)
    identity["adult_threshold"] = identity["adult"]["threshold"] if identity["adult"] else None  # results repeat it
    return loaded


def runtime_figures(folder, runtime, keras_sha256, threshold) -> dict | None:
    """The selection split's figures as `runtime` computes them (onnx.json, written by
    training/deploy/quantize.py), so that what is shown is what serves; None for keras, or
    when onnx.json is absent or describes another model.keras or threshold."""
    kinds = {ONNX_INT8: "int8", ONNX_FLOAT: "float"}
    try:
        report = json.loads((folder / ONNX_REPORT).read_text())
        entry = report[kinds[runtime]] if runtime in kinds else None
        if not entry or report.get("keras_sha256") != keras_sha256 or entry.get("threshold", threshold) != threshold:
            return None
        return entry["runtime"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
