"""One pass for both answers: an adult branch that continues the children's model's pass
(pneumo/model/one_pass.py), made by the real training CLIs on a tiny run."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pneumo.analysis import analyse
from pneumo.checks.scope import ADULT, OK
from pneumo.model import one_pass
from pneumo.model.loading import load_model
from pneumo.model.one_pass import ContinuedTrunk
from pneumo.model.predict import trunk_maps
from pneumo.model.preprocess import preprocess
from pneumo.model.onnx_runtime import OnnxMaps
from pneumo.model.run_folder import ADULT_REPORT, ADULT_TRUNK, META_ADULT_TRUNK
from tests.conftest import ROOT, TINY_TRAIN_ARGS, assert_no_locked_film_opened, route_every_film, run_audited
from tests.test_adult import write_synthetic_adults
from training.children.pretrained import load_layers, save_layers

VGG16_BLOCKS = {1: (3, 64, 64), 2: (64, 128, 128), 3: (128, 256, 256, 256), 4: (256, 512, 512, 512)}


def random_vgg16_layers(seed) -> dict:
    """VGG16's first four blocks with random (He-scaled) weights: a stand-in pretrained file."""
    rng = np.random.default_rng(seed)
    layers = {}
    for block, widths in VGG16_BLOCKS.items():
        for i, (fan_in, out) in enumerate(zip(widths, widths[1:]), start=1):
            kernel = rng.normal(0, np.sqrt(2 / (9 * fan_in)), (3, 3, fan_in, out)).astype(np.float32)
            layers[f"block{block}_conv{i}"] = [kernel, np.zeros(out, np.float32)]
    return layers


def train_args(weights):
    """The tiny run's arguments, with blocks 1-3 from `weights` and frozen: what a branch needs."""
    args = list(TINY_TRAIN_ARGS)
    args[args.index("--pretrained") + 1] = str(weights)
    return args + ["--pretrained-blocks", "4", "--frozen-blocks", "3"]


def test_the_fingerprint_of_the_first_blocks_as_stored():
    layers = random_vgg16_layers(0)
    stored = one_pass.fingerprint(layers)
    assert one_pass.fingerprint({**layers, "block4_conv1": [np.ones((3, 3, 256, 512))]}) == stored  # later blocks: not shared
    near = {name: [w.astype(np.float16).astype(np.float32) for w in arrays] for name, arrays in layers.items()}
    assert one_pass.fingerprint(near) == stored  # float16 storage, as model.keras keeps them
    signed = {**layers, "block1_conv1": [layers["block1_conv1"][0], np.full(64, -2.5e-08, np.float32)]}
    zeros = {**layers, "block1_conv1": [layers["block1_conv1"][0], np.zeros(64, np.float32)]}
    assert one_pass.fingerprint(signed) == one_pass.fingerprint(zeros)  # -0 and +0 alike
    moved = {**layers, "block3_conv3": [layers["block3_conv3"][0] * 1.01, layers["block3_conv3"][1]]}
    assert one_pass.fingerprint(moved) != stored


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vgg16-blocks1-4.npz"
    save_layers(random_vgg16_layers(0), path)
    return path


@pytest.fixture(scope="module")
def one_pass_run(tmp_path_factory, synthetic_data, pretrained):
    """A tiny children's run whose first blocks are `pretrained`'s, its branch, and an adult answer fitted on
    the branch's maps of films with painted opacities."""
    folder = tmp_path_factory.mktemp("one_pass")
    run, adults = folder / "run", write_synthetic_adults(folder / "adults")
    # The training report makes the trunk a branch by itself: blocks 1-3 frozen, the trunk's input size.
    run_audited(folder / "train.opened", "training.train", "--data", synthetic_data, "--out", run,
                *train_args(pretrained), "--adult-data", adults, "--adult-trunk-size", "32")
    trunk = OnnxMaps(run / ADULT_TRUNK)
    assert trunk.continues == one_pass.SHARED_LAYER and trunk.image_size == 32
    # A one-epoch model sits near its threshold, so the report may have refused its int8 model: force it.
    subprocess.run([sys.executable, "-m", "training.deploy.quantize", str(run), "--data", str(synthetic_data),
                    "--calibration-images", "16", "--force"], cwd=ROOT, check=True, capture_output=True)
    run_audited(folder / "fit.opened", "training.checks.scope", run, "--adult-data", adults, "--only-adult")
    for log in ("train.opened", "fit.opened"):
        assert_no_locked_film_opened(folder / log, adults)
    assert "continuing the children's model's pass" in json.loads((run / ADULT_REPORT).read_text())["features"]
    route_every_film(run, ADULT)  # a toy run has no population check of its own: read all as adults'
    return run, adults


def film_inputs(adults, count, size=32):
    return np.concatenate([preprocess(Image.open(p), size) for p in sorted(adults.glob("*.jpeg"))[:count]])


@pytest.mark.parametrize("runtime", ["keras", "onnx-float", "onnx-int8"])
def test_every_runtime_gives_and_describes_the_shared_maps(one_pass_run, pretrained, runtime):
    run, adults = one_pass_run
    loaded = load_model(run, runtime=runtime)
    inputs = film_inputs(adults, 8)
    raw, maps, shared = loaded.runtime.run(inputs)
    assert shared.shape == (8, 4, 4, 256)  # block3_pool of a 32 px input
    # The runtime's first blocks are the pretrained file's own: the fingerprint a branch is checked against.
    assert loaded.runtime.shared == {"layer": "block3_pool", "image_size": 32,
                                     "fingerprint": one_pass.fingerprint(load_layers(pretrained))}
    reference = load_model(run, runtime="keras").runtime.run(inputs)[2]
    if runtime != "onnx-int8":
        assert np.abs(shared - reference).max() <= 1e-4 * np.abs(reference).max()
    else:  # int8 moves single activations by a few steps; what the adult answer pools of them stays
        means = shared.mean(axis=(1, 2)).ravel(), reference.mean(axis=(1, 2)).ravel()
        assert np.corrcoef(*means)[0, 1] >= 0.98


def test_the_branch_continues_the_pass_it_was_made_for(one_pass_run, pretrained, synthetic_data, tmp_path):
    run, adults = one_pass_run
    loaded = load_model(run, runtime="onnx-float")
    assert isinstance(loaded.adult_trunk, ContinuedTrunk) and loaded.adult_trunk.image_size == 32
    films = [Image.open(p).convert("L") for p in sorted(adults.glob("*.jpeg"))[:4]]
    inputs = film_inputs(adults, 4)
    shared = loaded.runtime.run(inputs)[2]
    assert np.array_equal(loaded.adult_trunk.from_shared(shared), loaded.adult_trunk(inputs))
    # The same weights as one whole network from the film: the same maps (up to int8 steps).
    whole = tmp_path / "whole"
    shutil.copytree(run, whole)
    subprocess.run([sys.executable, "-m", "training.adults.trunk", str(whole), "--weights", str(pretrained),
                    "--image-size", "32", "--adult-data", str(adults), "--data", str(synthetic_data),
                    "--calibration-images", "8"], cwd=ROOT, check=True, capture_output=True)
    whole_maps = trunk_maps(load_model(whole, runtime="onnx-float").adult_trunk, films)
    branch_maps = trunk_maps(loaded.adult_trunk, films)
    correlation = np.corrcoef(whole_maps.mean(axis=(1, 2)).ravel(), branch_maps.mean(axis=(1, 2)).ravel())[0, 1]
    assert correlation >= 0.98, correlation


def test_an_adult_film_costs_one_pass(one_pass_run):
    """Analysed films that reach the adult answer go through the children's model once, and nothing else
    preprocesses them for a second network."""
    run, adults = one_pass_run
    loaded = load_model(run)
    assert isinstance(loaded.adult_trunk, ContinuedTrunk) and loaded.adult_head is not None
    passes = []
    run_once = loaded.runtime.run
    loaded.runtime.run = lambda inputs: passes.append(len(inputs)) or run_once(inputs)
    answered = 0
    for path in sorted(adults.glob("*.jpeg"))[:12]:
        passes.clear()
        result = analyse(path, loaded)
        assert passes == [1], passes
        if result.scope == OK:
            assert result.population == ADULT and set(result.probabilities) == {"NORMAL", "PNEUMONIA"}
            answered += 1
    assert answered >= 6  # the adult feature check may turn a few away, not most


def test_a_branch_made_for_another_model_does_not_serve(one_pass_run, tmp_path):
    import onnx

    from training.deploy.quantize import with_metadata

    run, _ = one_pass_run
    other = tmp_path / "other"
    shutil.copytree(run, other)
    proto = onnx.load(str(other / ADULT_TRUNK))
    description = json.loads({p.key: p.value for p in proto.metadata_props}[META_ADULT_TRUNK])
    onnx.save(with_metadata(proto, {META_ADULT_TRUNK: json.dumps({**description, "continues_fingerprint": "0" * 64})}),
              str(other / ADULT_TRUNK))
    loaded = load_model(other)
    assert loaded.adult_trunk is None and loaded.adult_head is None  # fails closed: adults get no verdict
    assert loaded.identity["adult"] is None  # and the panel and `pneumo info` claim no adult answer


def test_a_branch_needs_the_pretrained_first_blocks(one_pass_run, pretrained, synthetic_data, tmp_path):
    run, adults = one_pass_run
    other_weights = tmp_path / "other.npz"
    save_layers(random_vgg16_layers(1), other_weights)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    made = subprocess.run([sys.executable, "-m", "training.adults.trunk", str(copy), "--weights", str(other_weights),
                           "--continue-pass", "--adult-data", str(adults), "--data", str(synthetic_data),
                           "--calibration-images", "4"], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode != 0 and "does not keep" in made.stderr
    assert not (copy / ADULT_TRUNK).exists()
    made = subprocess.run([sys.executable, "-m", "training.adults.trunk", str(copy), "--weights", str(pretrained),
                           "--continue-pass", "--adult-data", str(adults), "--data", str(synthetic_data),
                           "--calibration-images", "4"], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    assert json.loads(made.stdout)["continues"] == "block3_pool"
    assert isinstance(load_model(copy).adult_trunk, ContinuedTrunk)
