"""The adult answer: its read-out, the router, the shipping rule, and a run folder that serves adults."""

import csv
from dataclasses import replace
import json
import shutil
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sklearn.metrics import roc_auc_score

from pneumo.answers.adult import AdultHead, adult_features, lung_weights
from pneumo.analysis import analyse, analyse_many
from pneumo.inputs.decode import decode
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.anatomy.lungs import LungFields, lung_fields
from pneumo.inputs.orientation import upright
from pneumo.inputs.photo import film_of
from pneumo.model.predict import adult_heatmaps, adult_outputs
from pneumo.model.preprocess import preprocess
from pneumo.model.run_folder import ADULT, ADULT_CHECK, ADULT_OPACITY, ADULT_REPORT, ADULT_TRUNK
from pneumo.checks.scope import ADULT as ADULT_POPULATION
from pneumo.checks.ood import FeatureCheck
from pneumo.anatomy.location import assumed_fields
from pneumo.checks.scope import (CHILD, NO_LUNGS, NOT_CHEST_XRAY, OK, OUTSIDE_POPULATION, UNLIKE_ADULTS, Scope,
                                 adult_scope)
from tests.conftest import (ADULT_DATA, ROOT, assert_no_locked_film_opened, require, require_import,
                            route_every_film, run_audited)
from tests.test_cli import run_cli
from pneumo.answers.readout import sigmoid
from training.adults import answer as adult_fit
from training.checks.scope import Features, Scored
from training.adults.answer import read_labels
from training.adults.locked import locked_patients
from training.report.card import adult_answer
from training.report.locked_split import LOCKED_RULE
from training.readout import fit_readout



def random_head(channels, rng, shipped=1.0):
    return AdultHead(mean=rng.normal(0, 0.1, 2 * channels), scale=rng.uniform(0.5, 2, 2 * channels),
                     coef=rng.normal(0, 0.2, 2 * channels), intercept=0.3, slope=1.7, offset=-0.2, threshold=0.4,
                     shipped=shipped)


def test_probability_is_the_calibrated_logistic_of_the_score():
    rng = np.random.default_rng(0)
    head = random_head(8, rng)
    features = adult_features(np.abs(rng.normal(0, 1, (5, 4, 4, 8))))
    z = (np.log1p(features.astype(np.float64)) - head.mean) / head.scale
    expected = 1 / (1 + np.exp(-(1.7 * (z @ head.coef + 0.3) - 0.2)))
    np.testing.assert_allclose(head.probability(features), expected, rtol=1e-9)
    assert 0.05 < expected.min() and expected.max() < 0.95  # away from 0 and 1, where any formula agrees


def test_features_are_the_mean_and_the_maximum_of_each_map():
    maps = np.zeros((1, 4, 4, 2), np.float32)
    maps[0, 1, 2, 0] = 8.0  # one hot spot in channel 0
    maps[0, :, :, 1] = 3.0
    np.testing.assert_allclose(adult_features(maps), [[0.5, 3.0, 8.0, 3.0]])


def test_over_the_lungs_the_heart_and_the_labels_do_not_count():
    maps = np.zeros((1, 4, 4, 2), np.float32)
    maps[0, :, 1:3, 0] = 9.0  # bright in the middle columns (the mediastinum), outside the lungs
    maps[0, 1, 0, 1] = 4.0  # a spot in the right lung (the image's left)
    weights = np.zeros((1, 4, 4))
    weights[0, :, 0] = weights[0, :, 3] = 1.0  # the lungs: the outer columns
    weights[0, 0, 0] = 0.2  # a corner cell only a fifth lung: in the mean by its share, not in the maximum
    features = adult_features(maps, weights)
    np.testing.assert_allclose(features, [[0.0, 4.0 / 7.2, 0.0, 4.0]], rtol=1e-6)
    assert adult_features(maps)[0, 2] == 9.0  # over the whole film the mediastinum would be the maximum


def test_lung_weights_are_each_cells_share_of_lung():
    right, left = np.zeros((128, 128), bool), np.zeros((128, 128), bool)
    right[:, :32] = True  # the first quarter of the columns
    left[64:, 96:] = True  # the bottom half of the last quarter
    weights = lung_weights(LungFields(right, left), (2, 4))
    np.testing.assert_allclose(weights, [[1, 0, 0, 0], [1, 0, 0, 1]])
    assert lung_weights(LungFields(right, left), (8, 8)).shape == (8, 8)
    # Fields that reach beyond the dark lung (behind the diaphragm): the answer pools over the dark part
    reaching = LungFields(right | np.eye(128, dtype=bool), left, aerated=right | left)
    np.testing.assert_allclose(lung_weights(reaching, (2, 4)), [[1, 0, 0, 0], [1, 0, 0, 1]])


@pytest.mark.parametrize("over_lungs", [False, True])
def test_channel_weights_are_the_spatial_mean_of_the_score_gradient(over_lungs):
    """Grad-CAM's weights for the adult answer, checked against finite differences."""
    rng = np.random.default_rng(1)
    head = random_head(3, rng)
    maps = np.abs(rng.normal(1, 0.5, (1, 3, 3, 3)))
    weights = rng.uniform(0, 1, (1, 3, 3)) if over_lungs else None
    numeric = np.zeros(maps.shape)
    step = 1e-6
    for index in np.ndindex(maps.shape):
        shifted = maps.copy()
        shifted[index] += step
        numeric[index] = (head.score(adult_features(shifted, weights)) -
                          head.score(adult_features(maps, weights)))[0] / step
    np.testing.assert_allclose(head.channel_weights(maps, weights), numeric.mean(axis=(1, 2)), rtol=1e-4, atol=1e-7)


def test_the_head_saves_and_loads(tmp_path):
    head = random_head(4, np.random.default_rng(2), shipped=0.0)
    head.lungs = 1.0
    head.save(tmp_path / ADULT)
    loaded = AdultHead.load(tmp_path)
    for key in head.__dataclass_fields__:
        np.testing.assert_allclose(getattr(loaded, key), getattr(head, key), rtol=1e-6)
    assert AdultHead.load(tmp_path / "elsewhere") is None
    (tmp_path / "old").mkdir()
    with np.load(tmp_path / ADULT) as data:  # a head saved before the lung pooling existed
        np.savez(tmp_path / "old" / ADULT, **{key: data[key] for key in data.files if key != "lungs"})
    assert AdultHead.load(tmp_path / "old").lungs == 0.0  # keeps pooling over the whole film


def test_the_shipping_rule_needs_every_bar():
    good = {"roc_auc": 0.93, "sensitivity": 0.88, "specificity": 0.80, "roc_auc_all_read": 0.85}
    assert all(adult_fit.rule_verdicts(good).values())
    for key, bar in adult_fit.RULE.items():
        verdicts = adult_fit.rule_verdicts({**good, key: bar - 0.01})
        assert not verdicts[key] and sum(verdicts.values()) == len(good) - 1


def test_the_threshold_keeps_the_sensitivity_target_and_sits_between_probabilities():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    scores = rng.normal(0, 1, 120) + 1.5 * y
    head = adult_fit.calibrate_and_threshold(random_head(2, rng), scores, y)
    p = 1 / (1 + np.exp(-(head.slope * scores + head.offset)))
    assert (p[y == 1] >= head.threshold).mean() >= adult_fit.SENSITIVITY_TARGET
    assert not np.any(np.isclose(p, head.threshold, atol=1e-9))  # never on an observed probability
    assert head.slope > 0  # higher scores, more likely pneumonia


def scored_films(x, files=None, groups=None):
    """A Scored set whose every FITTED variant has the adult trunk's features `x` (N, D)."""
    n = len(x)
    features = Features(pooled=np.zeros((n, 1)), regions=np.zeros((n, 1)), refused_by_statistics=np.zeros(n, bool),
                        raw=np.full((n, 3), 1 / 3), adult=x, adult_lungs=x, adult_trunk=x)
    return Scored(np.ones(n), np.arange(n) if groups is None else groups, np.zeros(n),
                  {name: features for name in adult_fit.FITTED}, files)


def test_another_hospitals_films_learnt_as_normal_stop_its_false_alarms():
    """Another hospital's normal films that NIH's read-out would call PNEUMONIA (they share the opacities'
    brightness, and differ in a feature NIH's films never vary): learnt as negatives, few are called, and the
    measured share judges each film by a fit without it."""
    rng = np.random.default_rng(8)
    n = 120
    sick = np.arange(n) % 2 == 0
    def films(count, bright, mark):  # non-negative, as a trunk's pooled maps are
        return np.abs(np.c_[rng.normal(bright, 0.5, count), rng.normal(mark, 0.3, count), rng.normal(1, 0.3, (count, 2))])

    nih = np.where(sick[:, None], films(n, 3, 1), films(n, 1, 1))
    other = films(150, 3, 2)
    files = [f"f{i}.png" for i in range(n)]
    labels = {f: {"rsna_class": adult_fit.OPACITY if s else adult_fit.NORMAL} for f, s in zip(files, sick)}
    adults, hospital = scored_films(nih, files, np.arange(n) // 2), scored_films(other)
    rows, y = np.arange(n), sick.astype(int)
    alone = adult_fit.fitted_head(adults, rows, y, adults.groups, 0)
    called_alone = np.mean(alone.probability(other) >= alone.threshold)
    assert called_alone >= 0.5  # NIH alone: most are false alarms
    head, report = adult_fit.fit_head(adults, labels, 0, lambda *_: None, other_hospital=hospital)
    called_learnt = np.mean(head.probability(other) >= head.threshold)
    assert called_learnt <= 0.1 and "another hospital" in report["trained_on"]
    # Each film judged by a fit without it: more are called than of the films the fit learnt, far fewer than alone.
    measured = adult_fit.other_hospital_false_alarms(adults, labels, hospital, 0)
    assert called_learnt < measured <= called_alone / 2, (called_learnt, measured, called_alone)


def test_a_film_at_the_cut_gets_the_label_the_fit_meant(tmp_path):
    """The fit chooses the threshold on the probabilities that the saved head serves (training/readout.py returns
    each read-out as saved): once saved and loaded, the head computes the very probabilities the cut was chosen
    between, and stores the cut itself to the last bit, so the films either side of it keep their labels."""
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(70, int), np.zeros(70, int)]
    features = np.expm1(np.abs(rng.normal(1.0 + 0.3 * y[:, None] * np.r_[1, 1, 0, 0, 0, 0], 0.5, (140, 6))))
    head = fit_readout(AdultHead, features, y, 1.0, slope=1.0, offset=0.0, threshold=0.5, shipped=1.0)
    head = adult_fit.calibrate_and_threshold(head, head.score(features), y)
    meant = sigmoid(head.slope * head.score(features) + head.offset)  # what the threshold was chosen on
    head.save(tmp_path / ADULT)
    served = AdultHead.load(tmp_path)
    assert served.threshold == head.threshold
    assert np.array_equal(served.probability(features), meant)
    positives = np.sort(meant[y == 1])
    at_cut = positives[positives >= head.threshold].min()  # the last positive kept by the sensitivity target
    below = positives[positives < head.threshold].max()
    assert below < served.threshold <= at_cut
    assert np.array_equal(served.probability(features) >= served.threshold, meant >= head.threshold)


def test_a_score_that_only_knows_the_projection_ranks_by_chance_within_one():
    """Bedside (AP) films are mostly the sicker patients': the figures within each projection
    expose a read-out that learnt the projection instead of the lungs."""
    reading = np.array([adult_fit.OPACITY] * 6 + [adult_fit.NORMAL] * 6 + [adult_fit.OTHER] * 4)
    projection = np.array(["AP"] * 4 + ["PA"] * 2 + ["AP"] * 2 + ["PA"] * 4 + ["AP", "PA"] * 2)
    probability = np.where(projection == "AP", 0.8, 0.2)
    measured = {"reading": reading, "probability": probability, "predicted": probability >= 0.5,
                "child_model": probability, "projection": projection}
    figures = adult_fit.figures(measured)
    assert figures["roc_auc"] > 0.6  # over both projections it looks informative...
    assert figures["projection_alone_roc_auc"] == pytest.approx(figures["roc_auc"])
    for view in ("AP", "PA"):  # ...and within each it is a coin
        assert figures["by_projection"][view]["roc_auc"] == pytest.approx(0.5)
        assert figures["by_projection"][view]["roc_auc_all_read"] == pytest.approx(0.5)
    assert figures["by_projection"]["AP"]["films"] == {"lung_opacity": 4, "normal": 2, "other_read": 2}
    no_view = adult_fit.figures({**measured, "projection": np.array([""] * len(reading))})
    assert "by_projection" not in no_view  # films without a recorded projection: no breakdown, no error


# --- the router, on a run folder whose adult answer ships -------------------------------------------


@pytest.fixture(scope="module")
def adult_serving_folder(tmp_path_factory):
    """The bundled model (with its adult trunk) and an adult read-out of the trunk that ships. The
    read-out's weights are random: the test is of the routing and the shape of the answer."""
    folder = tmp_path_factory.mktemp("adult_run") / "run"
    shutil.copytree(BUNDLED_DIR, folder)
    trunk = load_model(BUNDLED_DIR).adult_trunk
    assert trunk is not None, f"the bundled model has no {ADULT_TRUNK}"
    head = random_head(trunk.channels, np.random.default_rng(4))
    head.lungs, head.trunk = 1.0, 1.0  # the trunk's maps over the lung fields, as training/adults/answer.py fits it
    head.save(folder / ADULT)
    return folder


@pytest.fixture(scope="module")
def films(shared_data, tmp_path_factory):
    require(ADULT_DATA.is_dir(), f"adult X-rays not found at {ADULT_DATA}")
    folder = tmp_path_factory.mktemp("films")
    child, adult = folder / "child.jpeg", folder / "adult.jpeg"
    child.write_bytes(sorted((shared_data / "val" / "PNEUMONIA").glob("*virus*.jpeg"))[0].read_bytes())
    adult.write_bytes(sorted(ADULT_DATA.glob("*.jpeg"))[0].read_bytes())
    return {CHILD: child, ADULT_POPULATION: adult}


def assert_adult_answer(result, head_threshold):
    assert result["scope"] == OK and result["population"] == ADULT_POPULATION
    assert set(result["probabilities"]) == {"NORMAL", "PNEUMONIA"}  # no bacterial/viral claim for adults
    assert result["threshold"] == pytest.approx(head_threshold)
    assert result["label"] == ("PNEUMONIA" if result["pneumonia_probability"] >= head_threshold else "NORMAL")


def test_the_router_gives_each_population_its_answer(adult_serving_folder, films):
    loaded = load_model(adult_serving_folder)
    child, adult = analyse(films[CHILD], loaded), analyse(films[ADULT_POPULATION], loaded)
    assert (child.scope, child.population) == (OK, CHILD)
    assert set(child.probabilities) == {"NORMAL", "BACTERIAL", "VIRAL"}
    assert child.threshold == loaded.config["threshold"]
    assert_adult_answer(adult.as_dict(), loaded.adult_head.threshold)
    assert adult.heatmap is not None and adult.heatmap.max() == pytest.approx(1.0)


def test_the_adult_answer_reads_the_trunks_maps_over_the_films_lungs(adult_serving_folder, films):
    loaded = load_model(adult_serving_folder)
    head, trunk = loaded.adult_head, loaded.adult_trunk
    result = analyse(films[ADULT_POPULATION], loaded)
    film = upright(film_of(decode(films[ADULT_POPULATION]).image), loaded.orientation_check)
    maps = trunk(preprocess(film.image, trunk.image_size))
    assert maps.shape[1:] == (20, 20, trunk.channels)  # block4_conv2 at 160 px
    fields = lung_fields(film.image)
    assert fields is not None  # a real adult film: its own lungs, not the assumed ones
    weights = lung_weights(fields, maps.shape[1:3])[None]
    p = result.pneumonia_probability
    score = (np.log(p / (1 - p)) - head.offset) / head.slope  # the regression's score behind the answer
    assert score == pytest.approx(head.score(adult_features(maps, weights))[0], abs=1e-4)
    assert score != pytest.approx(head.score(adult_features(maps))[0], abs=0.1)  # not over the whole film
    _, child_maps = loaded.runtime(preprocess(film.image, loaded.config["image_size"]))
    child_weights = lung_weights(fields, child_maps.shape[1:3])[None]
    assert score != pytest.approx(head.score(adult_features(child_maps, child_weights))[0], abs=0.1)  # nor the children's maps
    assert result.heatmap.shape == (20, 20)  # the adult evidence, on the trunk's finer grid
    # Where: the opacity map (pneumo/answers/opacity.py), read on the whole lung fields and nil outside them.
    assert loaded.opacity_map is not None
    fields_share = lung_weights(fields, maps.shape[1:3], aerated=False)
    assert np.array_equal(result.heatmap, loaded.opacity_map.heatmap(maps, fields_share[None])[0])
    assert not result.heatmap[fields_share == 0].any() and result.heatmap.max() == pytest.approx(1.0)


def test_without_an_opacity_map_the_adult_heatmap_is_grad_cam(adult_serving_folder, films, tmp_path):
    """An older run folder (no adult_opacity.npz): adults still get a heatmap, the read-out's Grad-CAM."""
    folder = tmp_path / "run"
    shutil.copytree(adult_serving_folder, folder)
    (folder / ADULT_OPACITY).unlink()
    loaded = load_model(folder)
    assert loaded.opacity_map is None and loaded.adult_head is not None
    result = analyse(films[ADULT_POPULATION], loaded)
    film = upright(film_of(decode(films[ADULT_POPULATION]).image), loaded.orientation_check)
    maps = loaded.adult_trunk(preprocess(film.image, loaded.adult_trunk.image_size))
    weights = lung_weights(lung_fields(film.image), maps.shape[1:3])[None]
    assert np.allclose(result.heatmap, adult_heatmaps(loaded.adult_head, maps, weights)[0], atol=1e-6)


def test_a_head_whose_trunk_is_missing_leaves_adults_outside(adult_serving_folder, films, tmp_path):
    """adult.npz reads the trunk, the folder lost it (a partial Hub upload): no adult verdict, no crash."""
    folder = tmp_path / "run"
    shutil.copytree(adult_serving_folder, folder)
    (folder / ADULT_TRUNK).unlink()
    loaded = load_model(folder)
    assert loaded.adult_trunk is None and loaded.adult_head is None
    adult = analyse(films[ADULT_POPULATION], loaded)
    assert (adult.scope, adult.population, adult.label) == (OUTSIDE_POPULATION, None, None)
    assert adult.reason.startswith("This looks like an adult chest X-ray") and "no verdict" in adult.reason
    # What the panel and `pneumo info` show is what serves: no adult answer, although adult.json shipped one.
    assert json.loads((folder / ADULT_REPORT).read_text())["shipped"] is True
    assert loaded.identity["adult"] is None
    info = run_cli("info", model_path=folder)
    assert info.returncode == 0 and json.loads(info.stdout)["adult"] is None, info.stderr


def test_a_head_for_other_channels_is_not_advertised(adult_serving_folder, films, tmp_path):
    """adult.npz fitted on another trunk (other channels): loading drops it, and says no adult answer serves."""
    folder = tmp_path / "run"
    shutil.copytree(adult_serving_folder, folder)
    assert load_model(folder).identity["adult"] is not None  # as copied, it serves
    head = random_head(load_model(folder).adult_trunk.channels + 1, np.random.default_rng(5))
    head.lungs, head.trunk = 1.0, 1.0
    head.save(folder / ADULT)
    loaded = load_model(folder)
    assert loaded.adult_head is None and loaded.identity["adult"] is None
    assert analyse(films[ADULT_POPULATION], loaded).scope == OUTSIDE_POPULATION


def test_an_adult_film_without_lungs_or_far_from_the_adult_films_gets_no_verdict():
    """The adult answer's own checks: lung fields of the film's own, and its features within the
    distance of adult_check.npz; else outside_population and why."""
    rng = np.random.default_rng(2)
    check = FeatureCheck(np.zeros(4), np.eye(4)[:2], np.ones(2), residual_variance=1.0, threshold=3.0)
    routed = Scope(OK, scores={"adult_probability": 0.99}, population=ADULT_POPULATION)
    near, far = np.expm1(np.abs(rng.normal(0, 0.1, 4))), np.full(4, 100.0)
    lungs = LungFields(np.eye(8, dtype=bool), np.eye(8, dtype=bool)[::-1])
    kept = adult_scope(routed, near, lungs, check)
    assert (kept.code, kept.population) == (OK, ADULT_POPULATION)
    assert kept.scores["adult_features_distance"] < kept.scores["adult_features_threshold"] == 3.0
    assert kept.scores["adult_probability"] == 0.99  # the earlier checks' figures stay
    turned = adult_scope(routed, far, lungs, check)
    assert (turned.code, turned.population, turned.reason) == (OUTSIDE_POPULATION, None, UNLIKE_ADULTS)
    assert adult_scope(routed, far, lungs, None) is routed  # a run folder without the check
    assert adult_scope(routed, far, None, None) is routed  # nor lung pooling (an older head)
    no_lungs = adult_scope(routed, near, assumed_fields(), check)
    assert (no_lungs.code, no_lungs.reason) == (OUTSIDE_POPULATION, NO_LUNGS)


def test_non_x_rays_that_reach_the_adult_answer_get_no_verdict():
    """A scanned page and a photo once passed the children's model's checks and were read as adults', and the
    adult answer called both PNEUMONIA. They get no verdict (the anatomy check now refuses them first), and
    the adult answer's own checks would turn them away on their own, were they routed to it."""
    skimage_data = require_import("skimage.data")
    sklearn_datasets = require_import("sklearn.datasets")
    page = Image.fromarray(skimage_data.page())
    with Image.open(Path(sklearn_datasets.__file__).parent / "images" / "china.jpg") as photo:
        china = photo.convert("RGB")
    bundled = load_model(BUNDLED_DIR)
    assert bundled.adult_check is not None
    for image in (page, china):
        result = analyse(image, bundled)
        assert result.scope in (NOT_CHEST_XRAY, OUTSIDE_POPULATION) and result.label is None, result.scope
        film = film_of(image).image
        _, maps = bundled.runtime(preprocess(film, bundled.config["image_size"]))
        found = adult_outputs(bundled, [film], maps)
        routed = Scope(OK, scores={}, population=ADULT_POPULATION)
        turned = adult_scope(routed, found.features[0], found.lungs[0], bundled.adult_check)
        assert (turned.code, turned.reason in (UNLIKE_ADULTS, NO_LUNGS)) == (OUTSIDE_POPULATION, True)


def test_the_bundled_model_answers_adults_as_its_report_says(films):
    """What serves is what adult.json describes: the head it judged (its threshold to the last bit, the
    trunk's maps over the lungs), figures that meet today's RULE, and, served end to end on 80 films that
    radiologists read, a ranking of opacities like a fitted head's (measured: ROC AUC 0.914 on the 71 of
    them routed as adults', in sample; a head that read other features than it was fitted on ranks near 0.5)."""
    bundled = load_model(BUNDLED_DIR)
    report = json.loads((BUNDLED_DIR / ADULT_REPORT).read_text())
    head = bundled.adult_head
    assert head is not None and head.trunk == 1 and head.lungs == 1 and head.threshold == report["threshold"]
    assert report["shipped"] is True and all(adult_fit.rule_verdicts(report["cross_validated"]).values())
    adult = analyse(films[ADULT_POPULATION], bundled)
    assert_adult_answer(adult.as_dict(), head.threshold)
    with open(ADULT_DATA / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    read = {reading: [row["file"] for row in rows if row["rsna_class"] == reading][:40]
            for reading in (adult_fit.OPACITY, adult_fit.NORMAL)}
    results = analyse_many([decode(ADULT_DATA / name) for names in read.values() for name in names], bundled)
    opacity = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    routed = np.array([result.population == ADULT_POPULATION for result in results])
    assert routed.sum() >= 60, routed.sum()  # measured: 71 (the router reads a few adults as children)
    for result in np.array(results)[routed]:
        assert_adult_answer(result.as_dict(), head.threshold)
    p = np.array([result.pneumonia_probability for result in results])
    assert roc_auc_score(opacity[routed], p[routed]) >= 0.85


def test_clients_and_the_cli_get_the_adult_answer(adult_serving_folder, films, tmp_path):
    from gradio_client import Client, handle_file

    from tests.app_server import running_app

    threshold = load_model(adult_serving_folder).adult_head.threshold
    cli = run_cli("predict", "--json", films[CHILD], films[ADULT_POPULATION], model_path=adult_serving_folder)
    assert cli.returncode == 0, cli.stderr
    child, adult = map(json.loads, cli.stdout.splitlines())
    assert child["population"] == CHILD
    assert_adult_answer(adult, threshold)
    table = run_cli("predict", films[ADULT_POPULATION], model_path=adult_serving_folder)
    assert table.returncode == 0 and "adult.jpeg" in table.stdout, table.stderr
    with running_app(adult_serving_folder, tmp_path) as app:
        result, heatmap = Client(app.url, verbose=False).predict(handle_file(str(films[ADULT_POPULATION])),
                                                                 api_name="/predict")
    assert_adult_answer(result, threshold)
    assert heatmap is not None


# --- a tiny run of both populations ------------------------------------------------------------------


def write_synthetic_adults(folder, films=56):
    """Real adult films (lungs of their own, which the adult answer pools over and checks for) with
    radiologist readings made up for the test: every other film gets a bright opacity painted into each
    lung ("Lung Opacity"), the others stay as they are ("Normal"), so that even a tiny trunk tells
    them apart."""
    require(ADULT_DATA.is_dir(), f"adult X-rays not found at {ADULT_DATA}")
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "patient", "finding", "rsna_class"])
        writer.writeheader()
        for i, source in enumerate(sorted(ADULT_DATA.glob("*.jpeg"))[:films]):
            sick = i % 2 == 0
            name = f"nih_{i:08d}_000.jpeg"
            with Image.open(source) as image:
                film = image.convert("L")
            if sick:
                w, h = film.size
                for left in (0.15, 0.55):  # both lungs: a toy trunk of random weights sees it on every film
                    ImageDraw.Draw(film).ellipse((left * w, 0.35 * h, (left + 0.3) * w, 0.7 * h), fill=255)
            film.save(folder / name)
            writer.writerow({"file": name, "patient": str(i // 4), "finding": "",
                             "rsna_class": adult_fit.OPACITY if sick else adult_fit.NORMAL})
    return folder


def test_a_tiny_run_of_both_populations_serves_adults(tiny_run, synthetic_data, tmp_path):
    """The real training CLI's run folder (children) plus the adult trunk and the adult answer's fit
    (adults): the folder gets adult_trunk.int8.onnx, adult.npz and adult.json; neither fit opens a locked
    patient's film; the answer meets the shipping rule on films it can tell apart, the locked split
    scores it once, and an adult's film routed to it gets it."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    adults = write_synthetic_adults(tmp_path / "adults")
    trunk = run_audited(tmp_path / "trunk.opened", "training.adults.trunk", run, "--weights", "none",
                        "--layer", "block2_pool", "--image-size", "64", "--adult-data", adults,
                        "--data", synthetic_data, "--calibration-images", "16")
    assert json.loads(trunk.stdout)["layer"] == "block2_pool"
    run_audited(tmp_path / "fit.opened", "training.checks.scope", run, "--adult-data", adults, "--only-adult")
    for log in ("trunk.opened", "fit.opened"):
        assert_no_locked_film_opened(tmp_path / log, adults)
    report = json.loads((run / ADULT_REPORT).read_text())
    locked = locked_patients(adults)
    open_read = [row for row in read_labels(adults).values() if row["patient"] not in locked]
    assert report["cross_validated"]["films"] == {"lung_opacity": sum(r["rsna_class"] == adult_fit.OPACITY
                                                                      for r in open_read),
                                                  "normal": sum(r["rsna_class"] == adult_fit.NORMAL
                                                                for r in open_read), "other_read": 0}
    measured = report["cross_validated"]
    assert all(measured[key] >= bar for key, bar in adult_fit.RULE.items()), measured  # a painted opacity: easy
    assert report["shipped"] is True
    scored = subprocess.run([sys.executable, "-m", "training.report.locked_split", str(run), "--adult-data",
                             str(adults), "--jsrt", ""], cwd=ROOT, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr[-3000:]
    report = json.loads((run / ADULT_REPORT).read_text())
    figures = report["locked"]["figures"]
    assert figures["patients"] == len(locked) and sum(figures["films"].values()) == 4 * len(locked)
    assert report["locked"]["head_sha256"] and set(report["locked"]["rule_met"]) == set(LOCKED_RULE)
    assert report["locked"]["runtime"] in report["locked"]["by_runtime"]  # every runtime the folder serves
    # Painted opacities: easy for the locked patients too, so it ships, and the card shows both columns.
    assert all(report["locked"]["rule_met"].values()), figures
    assert report["shipped"] is True
    card = adult_answer(report)  # the card's adult paragraph (shown with a population check: not at this size)
    assert "| figure | tuning (five folds) | locked split" in card and "It met every bar" in card
    head = AdultHead.load(run)
    assert head.shipped == float(report["shipped"]) and head.trunk == 1 and head.coef.shape == (2 * 128,)  # block2_pool: 128 channels
    assert head.threshold == report["threshold"]
    assert "block2_pool" in report["features"]
    assert (run / ADULT_CHECK).is_file() and set(report["feature_check"]["turned_away"]) == {"original", "site", "photo"}
    route_every_film(run, ADULT_POPULATION)  # a toy run has no population check of its own: read all as adults'
    loaded = load_model(run)
    assert loaded.identity["adult"]["threshold"] == head.threshold
    served = {}  # film -> (painted, probability): the served path, every film
    # The films the fits saw: the adult feature check, fitted on 40 films, turns away most unseen ones.
    films = [i for i, row in enumerate(read_labels(adults).values()) if row["patient"] not in locked]
    for i in films:
        analysis = analyse(Image.open(adults / f"nih_{i:08d}_000.jpeg"), loaded)
        if analysis.pneumonia_probability is not None:
            assert_adult_answer(analysis.as_dict(), head.threshold)
            assert analysis.label == ("PNEUMONIA" if analysis.pneumonia_probability >= head.threshold else "NORMAL")
            served[i] = (i % 2 == 0, analysis.pneumonia_probability)
    assert len(served) >= len(films) - 4, sorted(set(films) - set(served))  # a few may be turned away, not many
    painted, probability = zip(*served.values())
    assert roc_auc_score(painted, probability) >= adult_fit.RULE["roc_auc"], served
