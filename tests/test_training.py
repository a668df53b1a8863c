"""The training package: data, balance, freezing, metrics, a tiny real run."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pneumo.answers.classes import BACTERIAL, NORMAL, VIRAL
from tests.conftest import ROOT, synthetic_xray
from training.children.augment import BalancedBatches, balanced_indices
from training.children.data import DataError, load_splits, patient_of, patient_split, scan_split
from training.report.metrics import bacterial_viral_auc, choose_threshold, evaluate, expected_calibration_error


def test_classes_and_patients_come_from_file_names(synthetic_data):
    samples = scan_split(synthetic_data / "train")
    by_name = {s.path.name: s for s in samples}
    assert by_name["IM-0001-0002.jpeg"].label == NORMAL
    assert by_name["person1_bacteria_2.jpeg"].label == BACTERIAL
    assert by_name["person51_virus_1.jpeg"].label == VIRAL
    assert by_name["person1_bacteria_2.jpeg"].patient == by_name["person1_bacteria_3.jpeg"].patient


def test_patient_of_kaggle_names(tmp_path):
    assert patient_of(tmp_path / "NORMAL" / "NORMAL2-IM-1427-0001.jpeg") == "NORMAL/NORMAL2-IM-1427"
    assert patient_of(tmp_path / "PNEUMONIA" / "person1000_virus_1681.jpeg") == "PNEUMONIA/person1000"


def test_patient_split_keeps_each_patient_on_one_side(synthetic_data):
    samples = scan_split(synthetic_data / "train")
    rest, held = patient_split(samples, 0.34, seed=3)
    assert {s.patient for s in rest}.isdisjoint({s.patient for s in held})
    assert len(rest) + len(held) == len(samples)
    assert {s.label for s in held} == {NORMAL, BACTERIAL, VIRAL}  # stratified
    again_rest, again_held = patient_split(samples, 0.34, seed=3)
    assert again_held == held  # deterministic under the seed


def test_real_data_split_has_no_shared_patients(shared_data):
    splits = load_splits(shared_data, holdout_fraction=0.1, seed=0)
    assert splits.selection_name == "val"
    assert {s.patient for s in splits.train}.isdisjoint({s.patient for s in splits.reports["train_holdout"]})
    assert 400 < len(splits.reports["train_holdout"]) < 650


@pytest.mark.parametrize("layout, message", [
    ({}, "needs a train/ folder"),
    ({"train/NORMAL/IM-0001-0001.jpeg": 1}, "missing: PNEUMONIA"),
    ({"train/NORMAL/IM-0001-0001.jpeg": 1, "train/PNEUMONIA/readme.txt": 1}, "PNEUMONIA holds no images"),
    ({"train/NORMAL/IM-0001-0001.jpeg": 1, "train/PNEUMONIA/person1_3.jpeg": 1}, "'bacteria' or 'virus'"),
])
def test_bad_data_folders_say_what_is_wrong(tmp_path, layout, message):
    for name in layout:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        synthetic_xray("normal", 0).save(tmp_path / name, format="JPEG")
    with pytest.raises(DataError, match=message):
        load_splits(tmp_path, holdout_fraction=0.34)


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(tmp_path / "nowhere")


def test_augmented_batches_keep_shapes_labels_and_balance():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (30, 32, 32), dtype=np.uint8)
    labels = np.array([NORMAL] * 20 + [BACTERIAL] * 7 + [VIRAL] * 3)
    batches = BalancedBatches(pixels, labels, batch_size=10, per_class=20, seed=0)
    inputs, seen = zip(*(batches[i] for i in range(len(batches))))
    assert len(batches) == 6
    assert all(x.shape == (10, 32, 32, 3) and x.dtype == np.float32 for x in inputs)
    assert np.bincount(np.concatenate(seen)).tolist() == [20, 20, 20]
    # Labels travel with their own images: the picked indices map back to them.
    assert (labels[batches.order] == np.concatenate(seen)).all()


def test_balanced_indices_repeat_only_small_classes():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 6)
    picks = balanced_indices(labels, 6, np.random.default_rng(0))
    assert np.bincount(labels[picks]).tolist() == [6, 6, 6]
    assert len(set(picks[labels[picks] == 0])) == 6  # the large class is sampled without repeats


def test_trainable_and_frozen_layers_follow_the_flags():
    from training.children.model import block_of, build_model

    model = build_model("vgg16", image_size=32, pretrained="none", pretrained_blocks=0, frozen_blocks=3)
    conv = [layer for layer in model.layers if "conv" in layer.name]
    assert all(layer.trainable == (block_of(layer.name) > 3) for layer in conv)
    assert model.get_layer("predictions").trainable and model.output_shape == (None, 3)


def test_pretrained_blocks_load_and_later_blocks_stay_fresh(tmp_path):
    import keras

    from training.children.model import build_model

    source = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    source.save_weights(tmp_path / "base.weights.h5")
    model = build_model("vgg16", 32, str(tmp_path / "base.weights.h5"), pretrained_blocks=2, frozen_blocks=1)
    same = lambda name: np.array_equal(model.get_layer(name).get_weights()[0], source.get_layer(name).get_weights()[0])
    assert same("block1_conv1") and same("block2_conv2")
    assert not same("block3_conv1")


def test_metrics_agree_with_hand_computed_cases():
    labels = np.array([NORMAL, NORMAL, NORMAL, BACTERIAL, VIRAL, BACTERIAL])
    probabilities = np.array([
        [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3],  # normals: P(pneumonia) .1 .4 .7
        [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.45, 0.5, 0.05],  # pneumonias: .8 .9 .55
    ])
    m = evaluate(labels, probabilities, threshold=0.5)
    # Predicted pneumonia: .7 (false positive), .8 .9 .55 (true positives); .1 .4 true negatives.
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # 8 of 9 (sick, healthy) pairs ranked right
    assert m["confusion_matrix_3class"] == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert bacterial_viral_auc(labels, probabilities) == 1.0
    # Cuts in (.4, .55] and (.7, .8] both give 5/6: the tie goes to the gap nearest 0.5, cut at its middle.
    assert choose_threshold(labels != NORMAL, probabilities[:, 1] + probabilities[:, 2]) == pytest.approx(0.475)
    assert choose_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9])) == pytest.approx(0.65)


def test_threshold_lies_between_observed_probabilities():
    """A cut on an observed probability flips that image's label with rounding."""
    rng = np.random.default_rng(3)
    probability = rng.random(300)
    truth = rng.random(300) < probability
    threshold = choose_threshold(truth, probability)
    assert threshold not in probability
    below, above = probability[probability < threshold].max(), probability[probability > threshold].min()
    assert threshold == pytest.approx((below + above) / 2)
    # Nudging every probability by far less than the gap changes no label.
    nudge = (above - below) / 4
    for shift in (-nudge, nudge):
        assert np.array_equal(probability + shift >= threshold, probability >= threshold)


def test_expected_calibration_error_by_hand():
    # Bin [0.8, 0.9): confidence 0.8, outcome rate 1/2 -> |0.5 - 0.8| = 0.3, weight 1/2.
    # Bin [0.2, 0.3): confidence 0.2, rate 0 -> 0.2, weight 1/2.
    y = np.array([1, 0, 0, 0])
    p = np.array([0.8, 0.8, 0.2, 0.2])
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)


def test_calibration_softens_overconfidence_and_corrects_class_balance():
    from training.report.calibrate import fit_calibration

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    # Right only 60% of the time but always 98% sure: T must rise above 1.
    guess = np.where(rng.random(300) < 0.6, labels, (labels + 1) % 3)
    probabilities = np.full((300, 3), 0.01)
    probabilities[np.arange(300), guess] = 0.98
    temperature, bias = fit_calibration(probabilities, labels)
    assert temperature > 2 and max(abs(b) for b in bias) < 0.5
    # A model that says 90% pneumonia for cases that are normal half the time needs a bias toward normal.
    labels = np.array([0, 1] * 100)
    probabilities = np.tile([[0.1, 0.8, 0.1]], (200, 1))
    temperature, bias = fit_calibration(probabilities, labels)
    from pneumo.answers.calibration import apply_calibration
    assert apply_calibration(probabilities, temperature, bias)[0, 0] == pytest.approx(0.5, abs=0.02)


def test_tiny_run_writes_a_folder_that_pneumo_serves(tiny_run):
    from pneumo.model.loading import load_model
    from pneumo.analysis import analyse

    for name in ("model.keras", "config.json", "metrics.json", "README.md", "roc.png", "reliability.png",
                 "training.png"):
        assert (tiny_run / name).is_file(), name
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["classes"] == ["NORMAL", "BACTERIAL", "VIRAL"] and config["image_size"] == 32
    assert 0 < config["threshold"] < 1
    loaded = load_model(tiny_run)
    analysis = analyse(synthetic_xray("virus", 7, size=100), loaded)
    assert analysis.scope == "ok" and analysis.label in ("NORMAL", "PNEUMONIA")
    assert sum(analysis.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert analysis.heatmap.min() >= 0 and analysis.heatmap.max() <= 1


def test_model_card_metadata_parses(tiny_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tiny_run / "README.md")
    assert card.data.library_name == "keras"
    metrics = {r.metric_type for r in card.data.eval_results}
    assert {"accuracy", "roc_auc", "sensitivity", "specificity"} <= metrics
    assert "not a medical device" in card.text and "CC BY 4.0" in card.text


def test_training_step_runs_under_mirrored_strategy_on_two_cpus():
    """Two logical CPU devices stand in for two GPUs; TF must be configured
    before it starts, hence a fresh process."""
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from training.children.augment import BalancedBatches
        from training.children.model import build_model, compile_model
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = compile_model(build_model("vgg16", 32, "none", 0, 3))
        rng = np.random.default_rng(0)
        batches = BalancedBatches(rng.integers(0, 255, (12, 32, 32), dtype=np.uint8),
                                  np.array([0, 1, 2] * 4), batch_size=6, per_class=2)
        history = model.fit(batches, epochs=1, verbose=0)
        print("replicas", strategy.num_replicas_in_sync, "loss", history.history["loss"][0])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    replicas, loss = result.stdout.split()[1], float(result.stdout.split()[3])
    assert replicas == "2" and np.isfinite(loss)
