"""A joint run: one backbone trained on children and adults, its adult read-out served from the maps,
judged only on the adult patients it held out."""

import csv
import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from pneumo.answers.adult import AdultHead, adult_features
from pneumo.analysis import analyse, films_as_read
from pneumo.checks.scope import ADULT, OK, OUTSIDE_POPULATION
from pneumo.model.loading import load_model
from pneumo.model.preprocess import preprocess, to_model_input
from pneumo.model.run_folder import ADULT as ADULT_FILE, ADULT_HELD_OUT, ADULT_REPORT, KERAS_MODEL
from tests.conftest import (ROOT, TINY_TRAIN_ARGS, assert_no_locked_film_opened, route_every_film, run_audited,
                            synthetic_xray)
from training.adults import answer as adult_fit
from training.adults.locked import locked_patients
from training.children import offline
from training.adults.data import (held_out_patients, read_rows, selection_patients, selection_samples,
                                 training_samples)
from training.report.card import adult_answer
from training.children.data import load_splits
from training.children.joint import JointBatches, probe_adult_output
from training.children.model import (ADULT_OUTPUT, CHILD_OUTPUT, build_model, served_model, trained_adult_head,
                            with_adult_head)


def write_adults(folder, read=40, unread=12):
    """Adult films: `read` with radiologist readings (opacities are a bright patch; four films per
    patient, two of each), then `unread` with NIH text-mined findings only (their own patients)."""
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "patient", "finding", "rsna_class"])
        writer.writeheader()
        for i in range(read + unread):
            sick = i % 2 == 0
            name = f"nih_{i:08d}_000.jpeg"
            synthetic_xray("bacteria" if sick else "normal", 1000 + i, size=96).save(folder / name)
            reading = (adult_fit.OPACITY if sick else adult_fit.NORMAL) if i < read else ""
            finding = ("pneumonia" if sick else "normal") if i < read + unread - 2 else "other"
            writer.writerow({"file": name, "patient": str(i // 4), "finding": finding, "rsna_class": reading})
    return folder


def test_the_adult_output_is_the_read_out_that_serving_computes_from_the_maps():
    """The network's `adult` output equals pneumo.answers.adult.AdultHead on the heatmap layer's maps,
    so the served model needs no second output and adults no second pass."""
    model = with_adult_head(build_model("vgg16", 32, "none", 0, 0, seed=3))
    dense = model.get_layer(ADULT_OUTPUT)
    kernel, bias = dense.get_weights()
    rng = np.random.default_rng(0)
    dense.set_weights([rng.normal(0, 0.3, kernel.shape).astype(np.float32), np.float32([0.2])])
    inputs = rng.normal(0, 60, (4, 32, 32, 3)).astype(np.float32)
    outputs = model.predict(inputs, verbose=0)
    maps = keras.Model(model.input, model.get_layer("block5_conv3").output).predict(inputs, verbose=0)
    served = trained_adult_head(model).probability(adult_features(maps))
    assert outputs[ADULT_OUTPUT][:, 0] == pytest.approx(served, rel=1e-4, abs=1e-6)
    assert served.std() > 0  # the films differ: the comparison is not between two constants
    children = served_model(model).predict(inputs, verbose=0)
    assert children == pytest.approx(outputs[CHILD_OUTPUT], abs=1e-6)


def test_the_adult_output_starts_as_a_linear_probe_of_the_training_adults():
    """Before any step, the adult output already ranks the training adults' opacities (a bright patch)
    above their normal films, as the logistic regression it was set to does."""
    model = with_adult_head(build_model("vgg16", 32, "none", 0, 0, seed=3))
    labels = np.array([i % 2 for i in range(24)])
    grey = lambda kind, i: np.asarray(synthetic_xray(kind, 50 + i, size=32).convert("L"), np.float32)  # noqa: E731
    # A faint patch (a quarter of the synthetic one): the untrained output does not rank it perfectly already.
    pixels = np.stack([grey("normal", i) + 0.25 * (grey("bacteria", i) - grey("normal", i)) * sick
                       for i, sick in enumerate(labels)]).astype(np.uint8)
    before = model.predict(to_model_input(pixels), verbose=0)[ADULT_OUTPUT][:, 0]
    probe_adult_output(model, pixels, labels, np.ones(len(labels)))
    after = model.predict(to_model_input(pixels), verbose=0)[ADULT_OUTPUT][:, 0]
    assert roc_auc_score(labels, after) > 0.95 and roc_auc_score(labels, after) > roc_auc_score(labels, before)


def test_held_out_patients_never_train_and_text_mined_labels_weigh_less(tmp_path):
    adults = write_adults(tmp_path / "adults")
    rows = read_rows(adults)
    held = held_out_patients(rows, 0.35, seed=0)
    choosing = selection_patients(rows, held, 0.2, seed=0)
    read_patients = {r["patient"] for r in rows if r["rsna_class"]}
    assert held and choosing and set(held) < read_patients and set(choosing) < read_patients
    assert not set(held) & set(choosing)
    samples = training_samples(adults, held + choosing, text_mined_weight=0.3)
    assert not {s.patient for s in samples} & set(held + choosing)
    chosen = selection_samples(adults, choosing)
    assert {s.patient for s in chosen} == set(choosing)
    assert [s.label for s in chosen] == [int(r["rsna_class"] == adult_fit.OPACITY) for r in rows
                                         if r["patient"] in choosing]
    by_name = {s.path.name: s for s in samples}
    for row in rows:
        sample = by_name.get(row["file"])
        if row["patient"] in held + choosing or (not row["rsna_class"] and row["finding"] == "other"):
            assert sample is None
        elif row["rsna_class"]:
            assert (sample.label, sample.weight) == (int(row["rsna_class"] == adult_fit.OPACITY), 1.0)
        else:
            assert (sample.label, sample.weight) == (int(row["finding"] == "pneumonia"), 0.3)
    assert training_samples(adults, held + choosing, text_mined_weight=0) == [s for s in samples if s.weight == 1.0]


def test_joint_batches_count_each_output_only_on_its_own_population():
    rng = np.random.default_rng(0)
    children, adults = rng.integers(0, 255, (9, 16, 16), np.uint8), rng.integers(0, 255, (5, 16, 16), np.uint8)
    child_labels, adult_labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2]), np.array([1, 0, 0, 1, 0])
    adult_weights = np.array([1.0, 1.0, 0.3, 0.3, 1.0])
    batches = JointBatches(children, child_labels, adults, adult_labels, adult_weights, batch_size=4,
                           per_class=4, adult_per_class=3, seed=1)
    assert len(batches.order) == 4 * 3 + 3 * 2
    seen_children = seen_adults = 0
    for index in range(len(batches)):
        inputs, targets, weights = batches[index]
        picks = batches.order[index * 4:(index + 1) * 4]
        child = picks < len(child_labels)
        assert inputs.shape == (4, 16, 16, 3)
        assert weights[CHILD_OUTPUT].tolist() == child.astype(float).tolist()
        assert targets[CHILD_OUTPUT][child].tolist() == child_labels[picks[child]].tolist()
        adult_rows = picks[~child] - len(child_labels)
        assert weights[ADULT_OUTPUT][~child] == pytest.approx(adult_weights[adult_rows])
        assert not weights[ADULT_OUTPUT][child].any()
        assert targets[ADULT_OUTPUT][~child].tolist() == adult_labels[adult_rows].tolist()
        seen_children, seen_adults = seen_children + child.sum(), seen_adults + (~child).sum()
    assert seen_children > 0 and seen_adults > 0


@pytest.fixture(scope="module")
def joint_run(synthetic_data, tmp_path_factory):
    """A run folder written by the real training CLI with --train-adults: 32 px, one epoch."""
    root = tmp_path_factory.mktemp("joint")
    adults = write_adults(root / "adults")
    out = root / "run"
    run_audited(root / "train.opened", "training.train", "--data", synthetic_data, "--out", out,
                "--adult-data", adults, "--train-adults", "--adult-images-per-class", "6", *TINY_TRAIN_ARGS)
    # So few children fit no scope checks in the report: judge the adult answer as a real run's report does.
    run_audited(root / "fit.opened", "training.checks.scope", out, "--adult-data", adults, "--only-adult")
    for log in ("train.opened", "fit.opened"):
        assert_no_locked_film_opened(root / log, adults)
    return out, adults


def test_a_tiny_joint_run_serves_both_populations(joint_run):
    out, adults = joint_run
    record = json.loads((out / ADULT_HELD_OUT).read_text())
    kept_out = record["held_out_patients"] + record["selection_patients"]
    trained = training_samples(adults, kept_out, record["text_mined_weight"])
    assert record["held_out_patients"] and record["selection_patients"]
    assert record["training_films"] == len(trained) and not {s.patient for s in trained} & set(kept_out)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert {"selection_children_auc", "selection_adult_auc"} <= set(history[0])  # the adults chose the epoch too
    served = keras.saving.load_model(out / KERAS_MODEL)
    assert not isinstance(served.output, dict)  # one output: the children's; adults are read from the maps
    assert record["held_out_patients"] == sorted(locked_patients(adults))  # the locked split is what it held out
    report = json.loads((out / ADULT_REPORT).read_text())
    assert "chose the joint run's epoch" in report["measured_on"]
    chose = sum(1 for r in read_rows(adults) if r["patient"] in record["selection_patients"] and r["rsna_class"])
    assert sum(report["cross_validated"]["films"].values()) == chose  # calibrated on those films alone
    head = AdultHead.load(out)
    assert head.coef == pytest.approx(np.asarray(record["trained_read_out"]["coef"]))  # the network's own read-out
    assert bool(head.shipped) == report["shipped"]  # adult.npz serves what adult.json says of it
    card = adult_answer(report)  # the card's adult paragraph (shown with a population check: not at this size)
    assert "this model's own adult output" in card and "patients the training never saw" in card


def test_a_tiny_joint_runs_adults_get_its_read_out_only_when_it_ships(joint_run, tmp_path):
    """Every film routed as an adult's (a toy run has no population check of its own): as the run left it,
    its read-out did not meet the rule on so few synthetic films, so adults get no verdict and why; the
    same folder with that read-out shipping gives adults the network's own read-out, at its threshold."""
    out, adults = joint_run
    films = [adults / "nih_00000000_000.jpeg", adults / "nih_00000001_000.jpeg"]
    run = tmp_path / "run"
    shutil.copytree(out, run)
    route_every_film(run, ADULT)
    assert json.loads((run / ADULT_REPORT).read_text())["shipped"] is False  # measured: ROC AUC 0.69
    loaded = load_model(run)
    assert loaded.adult_head is None and loaded.identity["adult"] is None
    for film in films:
        result = analyse(Image.open(film), loaded)
        assert (result.scope, result.population, result.label) == (OUTSIDE_POPULATION, None, None), result.reason
        assert result.reason.startswith("This looks like an adult chest X-ray")
    head = AdultHead.load(run)
    head.shipped = 1.0  # as if it had met the rule
    head.save(run / ADULT_FILE)
    loaded = load_model(run)
    assert not head.lungs and not head.trunk  # the children's model's maps, over the whole film
    for film in films:
        result = analyse(Image.open(film), loaded)
        assert (result.scope, result.population) == (OK, ADULT), result.reason
        assert result.threshold == head.threshold and set(result.probabilities) == {"NORMAL", "PNEUMONIA"}
        read = films_as_read(loaded, [Image.open(film)])[0][0].image
        _, maps = loaded.runtime(preprocess(read, loaded.config["image_size"]))
        assert result.pneumonia_probability == pytest.approx(head.probability(adult_features(maps))[0], abs=1e-6)


# --- a folder for a training machine without internet -------------------------------------------------------


def test_the_offline_folder_keeps_every_split_and_label(synthetic_data, tmp_path):
    adults = write_adults(tmp_path / "adults")
    out = tmp_path / "carry"
    offline.main([str(out), "--data", str(synthetic_data), "--adult-data", str(adults), "--side", "40",
                  "--hed-blocks", "0"])
    before, after = load_splits(synthetic_data), load_splits(out / "chest_xray")
    for name in ("train", "selection"):
        old, new = getattr(before, name), getattr(after, name)
        assert [(s.path.stem, s.label, s.patient) for s in old] == [(s.path.stem, s.label, s.patient) for s in new]
        assert all(s.path.suffix == ".webp" and max(Image.open(s.path).size) <= 40 for s in new)
    old_rows, new_rows = read_rows(adults), read_rows(out / "adult_cxr")
    assert [{**r, "file": r["file"].replace(".jpeg", ".webp")} for r in old_rows] == new_rows
    assert locked_patients(adults) == locked_patients(out / "adult_cxr")


def test_the_offline_wheels_are_the_pinned_versions():
    pins = dict(line.strip().split("==") for line in (ROOT / "requirements-train-jax.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for wheel in offline.WHEELS:
        name, version = wheel.split("==")
        assert pins.get(name, version) == version, f"{wheel} differs from requirements-train-jax.txt"
    assert {"keras", "imaug"} <= {wheel.split("==")[0] for wheel in offline.WHEELS}
