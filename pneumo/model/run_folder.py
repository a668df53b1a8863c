"""The run folder's contract: what a training run writes and serving reads.

Training writes through this module and serving reads through it; no other
module spells a file name of the folder. It holds

- the file names (and which of them the Hub pull needs or may fetch),
- the config.json schema, validated when a folder is loaded,
- the ONNX models' tensor names and metadata keys,
- the preprocessing constants that the model was trained with.

`format_version` in config.json says which schema a folder follows. A
folder of an older version keeps loading; a newer one is refused with the
reason, so an old `pneumo` never misreads it.
"""

import json
import math
from pathlib import Path

FORMAT_VERSION = 1

# The run folder this package ships: the default model, and the lungs and heart of every other.
BUNDLED_DIR = Path(__file__).parents[1] / "bundled_model"

# ------------------------------------------------------------------ files

KERAS_MODEL = "model.keras"  # the trained model, float16 storage
INT8_ONNX = "model.int8.onnx"  # int8 weights and activations: serving on CPUs with VNNI
# The float model's ONNX graph without its weights: they are read from
# model.keras at load (float16 storage, computed in float32), so the float
# path costs the run folder a few KB instead of another 30 MB.
FLOAT_ONNX = "model.float.onnx"
ONNX_REPORT = "onnx.json"  # how the ONNX models compare with Keras, and what they were made from
CONFIG = "config.json"
METRICS = "metrics.json"
OOD = "ood.npz"  # the not-a-chest-X-ray check (pneumo/checks/ood.py)
POPULATION = "population.npz"  # the population check (pneumo/checks/population.py)
POPULATION_REPORT = "population.json"  # its cross-validated figures (training/checks/scope.py)
ADULT = "adult.npz"  # the adult answer's read-out of the model's features (pneumo/answers/adult.py)
ADULT_REPORT = "adult.json"  # its figures on radiologist-labelled adults and the shipping rule (training/adults/answer.py)
ADULT_HELD_OUT = "adult_held_out.json"  # a joint run: the adult patients no fit saw, and the trained read-out
# The adult answer's own network: pretrained VGG16 convolutions at 160 px, int8 (training/adults/trunk.py)
ADULT_TRUNK = "adult_trunk.int8.onnx"
# Where on an adult film the opacity is: a cell-by-cell read-out of the trunk's maps (pneumo/answers/opacity.py)
ADULT_OPACITY = "adult_opacity.npz"
ADULT_CHECK = "adult_check.npz"  # the adult answer's features far from adult films': no verdict (pneumo/checks/scope.py)
ORIENTATION = "orientation.npz"  # the turned-or-inverted-film check (pneumo/inputs/orientation.py)
# The lungs and heart (pneumo/anatomy/segmenter.py): a run folder without them uses the bundled model's.
ANATOMY = "anatomy.onnx"
ANATOMY_REPORT = "anatomy.json"  # its input size, its held-out films and their Dice (training/anatomy/segmenter.py)
CARD = "README.md"  # the model card
ROC_PLOT, TRAINING_PLOT, RELIABILITY_PLOT = "roc.png", "training.png", "reliability.png"
CHECKPOINTS = "checkpoints"  # per-epoch training state: never pushed, never served

# What serving needs, and what it uses when present (the Hub pull fetches both;
# config.json first).
REQUIRED = (CONFIG, KERAS_MODEL)
OPTIONAL = (METRICS, CARD, OOD, POPULATION, POPULATION_REPORT, ADULT, ADULT_REPORT, ADULT_TRUNK, ADULT_CHECK,
            ADULT_OPACITY, ORIENTATION, ANATOMY, ANATOMY_REPORT, INT8_ONNX, FLOAT_ONNX, ONNX_REPORT)
# Left out of a push: training state and the temporary full-precision copy.
NOT_PUSHED = [f"{CHECKPOINTS}/", "*.float32.keras"]

# ------------------------------------------------------------------ ONNX

ONNX_INPUT = "input"  # float32 (N, H, W, 3): pneumo.model.preprocess output
ONNX_PROBABILITIES = "probabilities"  # float32 (N, 3): uncalibrated, in CLASSES order
ONNX_MAPS = "maps"  # float32 (N, h, w, C): the heatmap layer's activations
# float32 (N, h, w, C): the maps of the first blocks that the adult trunk shares (pneumo/model/one_pass.py)
ONNX_SHARED = "shared"
ONNX_OPSET = 17
# metadata_props of both ONNX files (strings; JSON where structured)
META_KERAS_SHA256 = "pneumo.keras_sha256"  # the model.keras it was made from: a stale file is never served
META_HEAD_KERNEL = "pneumo.head_kernel"  # JSON (C, 3): the dense head's kernel, for the heatmap
# ADULT_TRUNK only, JSON {"weights", "layer", "image_size"}: what it computes, at which input size
# (a branch adds "continues", "continues_image_size", "continues_fingerprint": the pass it continues)
META_ADULT_TRUNK = "pneumo.adult_trunk"
META_SHARED = "pneumo.shared"  # JSON: what ONNX_SHARED is (pneumo/model/one_pass.py `description`)
META_WEIGHTS = "pneumo.weights_from_keras"  # FLOAT_ONNX only, JSON {initializer: [h5 dataset, axes order]}
KERAS_WEIGHTS_MEMBER = "model.weights.h5"  # the weights inside the .keras zip

# ------------------------------------------------------------------ preprocessing

# BGR means that VGG16 (and HED) were trained with, Caffe style.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
# Every X-ray is standardised to this mean and spread before the VGG mean is
# taken off. Per-image standardisation removes the exposure and contrast
# differences between the training collection and later ones (measured: it
# lifted a frozen-feature probe on val/ from AUC 0.963 to 0.970).
TARGET_MEAN = 120.0
TARGET_STD = 55.0

# ------------------------------------------------------------------ config.json

CLASSES = ("NORMAL", "BACTERIAL", "VIRAL")  # output order; pneumo.answers.classes re-exports it


class ConfigError(ValueError):
    """config.json breaks the schema; the message names the field."""


def read_config(folder) -> dict:
    """The folder's config.json, validated (ConfigError names the bad field)."""
    path = Path(folder) / CONFIG
    try:
        config = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from error
    return validate_config(config, where=str(path))


def write_config(folder, config: dict) -> None:
    """Validate, then write: training never leaves a folder that serving refuses."""
    validate_config(config)
    (Path(folder) / CONFIG).write_text(json.dumps({"format_version": FORMAT_VERSION, **config}, indent=2))


def validate_config(config: dict, where=CONFIG) -> dict:
    """Raise ConfigError for the first field that serving cannot trust; else return `config`."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a JSON object")

    def fail(field, why):
        raise ConfigError(f"{where}: field '{field}' {why}")

    version = config.get("format_version", 1)  # folders from before the field are version 1
    if not isinstance(version, int) or version < 1:
        fail("format_version", f"must be a positive integer, not {version!r}")
    if version > FORMAT_VERSION:
        fail("format_version", f"is {version}, newer than this pneumo reads ({FORMAT_VERSION}): update pneumo")
    classes = config.get("classes")
    if not isinstance(classes, list) or tuple(classes) != CLASSES:
        missing = [c for c in CLASSES if not isinstance(classes, list) or c not in classes]
        fail("classes", f"must be {list(CLASSES)} in this order" + (f"; missing {missing}" if missing else "")
             + f", not {classes!r}")
    size = config.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        fail("image_size", f"must be an integer of at least 32 (pixels), not {size!r}")
    threshold = config.get("threshold")
    if not _number(threshold) or not 0 < threshold < 1:
        fail("threshold", f"must be a number strictly between 0 and 1, not {threshold!r}")
    temperature = config.get("temperature", 1.0)
    if not _number(temperature) or temperature <= 0:
        fail("temperature", f"must be a number above 0, not {temperature!r}")
    bias = config.get("class_bias", [0.0] * len(CLASSES))
    if not isinstance(bias, list) or len(bias) != len(CLASSES) or not all(_number(b) for b in bias):
        fail("class_bias", f"must be {len(CLASSES)} numbers, one per class, not {bias!r}")
    layer = config.get("gradcam_layer")
    if not isinstance(layer, str) or not layer:
        fail("gradcam_layer", f"must name the model's last convolution layer, not {layer!r}")
    return config


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
