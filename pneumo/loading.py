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
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pneumo")

BUNDLED_DIR = Path(__file__).parent / "bundled_model"
MODEL_FILE = "model.keras"


@dataclass
class LoadedModel:
    keras_model: object
    config: dict
    identity: dict  # what the app and `pneumo info` show: where it came from, its figures

    @functools.cached_property
    def gradcam(self):
        from .gradcam import GradCam

        return GradCam(self.keras_model, self.config["gradcam_layer"])

    @functools.cached_property
    def features_and_probabilities(self):
        """inputs -> [Grad-CAM layer's maps averaged over space, probabilities]:
        the not-a-chest-X-ray check's features come with the same forward pass."""
        import keras

        maps = self.keras_model.get_layer(self.config["gradcam_layer"]).output
        pooled = keras.layers.GlobalAveragePooling2D()(maps)
        # One input tensor, not a list: batches are passed as one array.
        return keras.Model(self.keras_model.input, [pooled, self.keras_model.output])

    @functools.cached_property
    def ood_check(self):
        """The run folder's fitted feature check, or None (pneumo/ood.py)."""
        from .ood import FeatureCheck

        try:
            check = FeatureCheck.load(self.identity["path"])
        except (OSError, ValueError, KeyError) as error:  # a broken file must not stop serving
            log.warning("ood.npz unreadable (%s): the not-a-chest-X-ray check uses image statistics only", error)
            return None
        channels = self.features_and_probabilities.outputs[0].shape[-1]
        if check is not None and check.mean.shape != (channels,):
            log.warning("ood.npz was fitted for another model: the check uses image statistics only")
            return None
        return check

    @functools.cached_property
    def population_check(self):
        """The run folder's fitted population check, or None (pneumo/population.py)."""
        from .population import PopulationCheck

        try:
            check = PopulationCheck.load(self.identity["path"])
        except (OSError, ValueError, KeyError, TypeError) as error:  # a broken file must not stop serving
            log.warning("population.npz unreadable (%s): no population check", error)
            return None
        channels = self.features_and_probabilities.outputs[0].shape[-1]
        if check is not None and check.coef.shape != (channels,):
            log.warning("population.npz was fitted for another model: no population check")
            return None
        return check

    @functools.cached_property
    def fast(self):
        """The int8 ONNX model for probabilities without heatmap, or None (see pneumo/fast.py)."""
        from .fast import load_fast

        return load_fast(self.identity["path"], self.identity["sha256"])


def load_model(path=None, repo=None, revision=None) -> LoadedModel:
    """Load from `path`, else from the Hub `repo`, else the bundled model."""
    if path:
        return _load_folder(Path(path), source="path")
    if repo:
        from .hub import HubError, download_run

        revision = revision or "main"
        try:
            folder, commit = download_run(repo, revision)
            return _load_folder(folder, source="hub", repo=repo, revision=revision, commit=commit)
        except (HubError, OSError, ValueError) as error:
            reason = f"could not load {repo}@{revision} from the Hub: {error}"
            log.warning("%s; serving the bundled model instead", reason)
            return _load_folder(BUNDLED_DIR, source="bundled", fallback_reason=reason)
    return _load_folder(BUNDLED_DIR, source="bundled")


@functools.cache
def get_model() -> LoadedModel:
    """The process's model, chosen by the PNEUMO_MODEL_* environment variables."""
    env = os.environ.get
    return load_model(env("PNEUMO_MODEL_PATH"), env("PNEUMO_MODEL_REPO"), env("PNEUMO_MODEL_REVISION"))


def _load_folder(folder, source, repo=None, revision=None, commit=None, fallback_reason=None):
    """A run folder (or a model file inside one) -> LoadedModel."""
    import keras

    model_file = folder if folder.is_file() else folder / MODEL_FILE
    config_file = model_file.parent / "config.json"
    if not model_file.is_file() or not config_file.is_file():
        raise FileNotFoundError(f"{model_file.parent} needs {MODEL_FILE} and config.json (a training run folder)")
    config = json.loads(config_file.read_text())
    keras_model = keras.saving.load_model(model_file, compile=False)
    identity = {
        "source": source,
        "path": str(model_file.parent),
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "sha256": sha256_of(model_file),
        "name": config.get("name"),
        "classes": config["classes"],
        "threshold": config["threshold"],
        "image_size": config["image_size"],
        "metrics": config.get("validation", {}),
        "fallback_reason": fallback_reason,
    }
    log.info("model %s from %s (sha256 %s)", identity["name"], source, identity["sha256"][:12])
    return LoadedModel(keras_model, config, identity)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
