"""Who the model is for: the scope of an answer, on real images, through every entry point."""

import json

import numpy as np
import pytest
from PIL import Image

from pneumo.analysis import MODEL_KEYS, analyse, analyse_many
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.inputs.photo import film_of
from pneumo.model.run_folder import POPULATION as POPULATION_FILE
from pneumo.checks.scope import NO_POPULATION_CHECK, NOT_CHEST_XRAY, OK, OUTSIDE_POPULATION, SCOPES
from tests.app_server import running_app
from tests.conftest import ADULT_DATA, require, require_import
from tests.test_cli import run_cli
from training.checks import population
from training.checks import scope as scope_fit
from training.checks.photos import photo_of_film

RESULT_KEYS = {"scope", "population", "reason", "label", "pneumonia_probability", "probabilities", "threshold", "lungs",
               "warnings", "research", "checks", "model", "location"}
# Whose answer a film in scope gets, and the classes of that answer (pneumo/checks/scope.py, pneumo/answers/adult.py).
CLASSES_OF = {"child": {"NORMAL", "BACTERIAL", "VIRAL"}, "adult": {"NORMAL", "PNEUMONIA"}}
skimage_data = require_import("skimage.data")


@pytest.fixture(scope="module")
def bundled():
    assert (BUNDLED_DIR / POPULATION_FILE).is_file(), "the bundled model ships its population check"
    return load_model(BUNDLED_DIR)


@pytest.fixture(scope="module")
def files(shared_data, tmp_path_factory):
    """One file per case, as a user would upload it."""
    require(ADULT_DATA.is_dir(), f"adult X-rays not found at {ADULT_DATA}")
    folder = tmp_path_factory.mktemp("scope")
    child = sorted((shared_data / "val" / "PNEUMONIA").glob("*bacteria*.jpeg"))[0]
    adult = sorted(ADULT_DATA.glob("*.jpeg"))[0]
    paths = {"child": folder / "child.jpeg", "adult": folder / "adult.jpeg", "photo of a child's film": folder /
             "photo.jpeg", "photo of a cat": folder / "cat.png"}
    paths["child"].write_bytes(child.read_bytes())
    paths["adult"].write_bytes(adult.read_bytes())
    with Image.open(child) as image:
        photo_of_film(image, np.random.default_rng(3), cast="warm lamp", background="wooden desk", blur=0.6).save(
            paths["photo of a child's film"], quality=90)
    Image.fromarray(skimage_data.chelsea()).save(paths["photo of a cat"])
    return paths


EXPECTED = {"child": OK, "photo of a child's film": OK, "adult": OK, "photo of a cat": NOT_CHEST_XRAY}
POPULATION = {"child": "child", "photo of a child's film": "child", "adult": "adult", "photo of a cat": None}


def assert_schema(result):
    assert set(result) == RESULT_KEYS and result["scope"] in SCOPES
    assert set(result["model"]) == set(MODEL_KEYS)
    json.dumps(result)  # plain JSON all the way down
    assert (result["label"] == "PNEUMONIA") == (result["location"] is not None)  # where: for PNEUMONIA only
    if result["scope"] == OK:
        assert result["reason"] is None and result["research"] is None
        assert result["label"] in ("NORMAL", "PNEUMONIA") and 0 <= result["pneumonia_probability"] <= 1
        assert set(result["probabilities"]) == CLASSES_OF[result["population"]]
        assert result["label"] == ("PNEUMONIA" if result["pneumonia_probability"] >= result["threshold"] else "NORMAL")
    else:  # no verdict: nothing that reads as one, the raw numbers only under `research`
        assert result["label"] is None and result["pneumonia_probability"] is None and result["probabilities"] is None
        assert result["population"] is None and result["threshold"] is None
        assert isinstance(result["reason"], str) and len(result["reason"]) > 40
        assert set(result["research"]) == {"pneumonia_probability", "probabilities"}


def test_scopes_of_real_images(bundled, files):
    for case, path in files.items():
        analysis = analyse(path, bundled)
        assert analysis.scope == EXPECTED[case], (case, analysis.reason, analysis.checks)
        assert analysis.population == POPULATION[case], case
        assert_schema(analysis.as_dict())
        assert (analysis.heatmap is not None) == (analysis.scope == OK), case
    cat = analyse(files["photo of a cat"], bundled)
    assert "chest X-ray" in cat.reason
    photo = analyse(files["photo of a child's film"], bundled)
    assert any("photo of an X-ray" in w for w in photo.warnings)


def test_without_a_population_check_no_chest_x_ray_gets_a_verdict(files, tmp_path):
    """A run folder that lost population.npz cannot tell an adult's film from a child's: no verdict, and
    why, for every chest X-ray (an adult's would otherwise get the children's answer)."""
    folder = tmp_path / "run"
    folder.mkdir()
    for path in BUNDLED_DIR.iterdir():
        if path.name != POPULATION_FILE:
            (folder / path.name).symlink_to(path)
    loaded = load_model(folder)
    assert loaded.population_check is None
    adults = sorted(ADULT_DATA.glob("*.jpeg"))[:12]
    results = analyse_many([*adults, files["child"]], loaded)
    for path, result in zip([*adults, files["child"]], results):
        assert (result.scope, result.population, result.label) == (OUTSIDE_POPULATION, None, None), path
        assert result.reason == NO_POPULATION_CHECK and result.heatmap is None
        assert_schema(result.as_dict())
    assert analyse(files["photo of a cat"], loaded).scope == NOT_CHEST_XRAY  # the checks before it still speak


def test_a_photo_keeps_the_label_of_its_film(bundled, files):
    film = analyse(files["child"], bundled)
    photo = analyse(files["photo of a child's film"], bundled)
    assert photo.label == film.label == "PNEUMONIA"


def test_a_photo_is_cropped_to_its_film(shared_data):
    with Image.open(sorted((shared_data / "val" / "NORMAL").glob("*.jpeg"))[0]) as image:
        xray = image.convert("L")
    photo = photo_of_film(xray, np.random.default_rng(0), cast="blue monitor", background="wooden desk", film_share=0.5,
                          tilt=0.0)
    film = film_of(photo)
    assert film.is_photo and film.image.mode == "L"
    left, top, right, bottom = film.box
    assert 0.4 < (right - left) * (bottom - top) / (photo.width * photo.height) < 0.75  # the desk is cut away


def test_the_checks_are_fitted_on_films_as_serving_reads_them(bundled, files):
    """The fits score a film turned on its side, or mirrored, as serving reads it: turned back upright,
    mirrored back, so a check learns on the films it will judge (pneumo.analysis films_as_read)."""
    with Image.open(files["child"]) as image:
        film = image.convert("L")
    upright = scope_fit.score(bundled, [film], adult_trunk=True)
    for altered in (film.rotate(90, expand=True), film.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
        scored = scope_fit.score(bundled, [altered], adult_trunk=True)
        for name in ("pooled", "regions", "adult_lungs", "adult_trunk"):
            assert np.allclose(getattr(scored, name), getattr(upright, name), atol=1e-5), name


def test_every_entry_point_agrees(bundled, files, tmp_path):
    """The same file gives the same scope and label through the UI's handler,
    gradio_client and the CLI: they all call pneumo.analysis."""
    from gradio_client import Client, handle_file

    expected = {case: analyse(path, bundled).as_dict() for case, path in files.items()}
    with running_app(BUNDLED_DIR, tmp_path) as app:
        client = Client(app.url, verbose=False)
        for case, path in files.items():
            result, heatmap = client.predict(handle_file(str(path)), api_name="/predict")
            assert_schema(result)
            assert (result["scope"], result["label"]) == (expected[case]["scope"], expected[case]["label"]), case
            assert result["population"] == POPULATION[case], case
            assert (heatmap is None) == (result["scope"] != OK), case
            if case == "photo of a cat":
                assert result["label"] is None and result["reason"] == expected[case]["reason"]
    cli = run_cli("predict", "--json", *files.values(), model_path=BUNDLED_DIR)
    assert cli.returncode == 0, cli.stderr
    for case, line in zip(files, map(json.loads, cli.stdout.splitlines())):
        assert (line["scope"], line["label"], line["population"]) == (
            expected[case]["scope"], expected[case]["label"], POPULATION[case]), case


def test_the_ui_shows_a_reason_not_a_verdict(bundled, files):
    import app  # the checkout's app.py: its `show` turns a result into what the page displays
    result = analyse(files["photo of a cat"], bundled).as_dict()
    verdict, breakdown, notes, heatmap_panel, where = app.show(result)
    assert verdict["value"]["label"] == "No verdict"
    assert breakdown["visible"] is False and heatmap_panel["visible"] is False and where == ""
    assert result["reason"] in notes


# --- the fit ---------------------------------------------------------------------------------


def fake_set(rng, n, outside, shift, variants=("site", "photo")):
    """A scored set stand-in: adults differ from children along a few feature directions."""
    def features():
        regions = np.expm1(np.abs(rng.normal(1.0 + shift * np.r_[np.ones(4), np.zeros(28)], 0.3, (n, 32))))
        return scope_fit.Features(regions[:, :8], regions, np.zeros(n, bool), np.full((n, 3), 1 / 3), regions[:, :16],
                                  regions[:, :16])

    return scope_fit.Scored(np.full(n, outside), np.array([f"p{outside}-{i}" for i in range(n)]), np.zeros(n, int),
                            {name: features() for name in ("original", *variants)})


def fake_sets(seed):
    rng = np.random.default_rng(seed)
    return scope_fit.Sets(fake_set(rng, 120, 0, 0.0), fake_set(rng, 60, 0, 0.0), fake_set(rng, 60, 1, 0.8))


def test_population_fit_is_deterministic_and_separates():
    first, again = (population.cross_validate(fake_sets(7), None, seed=3) for _ in range(2))
    for name in first["scores"]:
        np.testing.assert_array_equal(first["scores"][name][0], again["scores"][name][0])
    one, two = (population.fit(population.rows(fake_sets(7), None), seed=3) for _ in range(2))
    np.testing.assert_array_equal(one.coef, two.coef)
    assert first["gated"]["original"]["children"] <= 0.05  # judged out of fold: near, not at, GATED_CHILDREN
    assert first["gated"]["original"]["adults"] > 0.9


def test_the_figures_judge_each_film_at_a_threshold_its_fold_did_not_choose():
    """The shipped threshold is chosen on the children's out-of-fold scores, so at it their share routed as
    adults is GATED_CHILDREN by construction; the reported figures use each fold's own threshold instead."""
    measured = population.cross_validate(fake_sets(7), None, seed=3)
    children, adults = measured["scores"]["original"]
    fold_children, fold_adults = measured["folds"]
    for fold in range(population.FOLDS):
        expected = population.cut_above(children[fold_children != fold], population.GATED_CHILDREN)
        assert np.all(measured["thresholds"][0][fold_children == fold] == expected)
        assert np.all(measured["thresholds"][1][fold_adults == fold] == expected)
    assert len(set(measured["fold_thresholds"])) > 1
    gated = measured["gated"]["original"]
    assert gated["children"] == np.mean(children >= measured["thresholds"][0])
    assert gated["adults"] == np.mean(adults >= measured["thresholds"][1])
    assert measured["threshold"] == population.cut_above(children, population.GATED_CHILDREN)  # what ships


def test_a_hospital_left_out_is_measured_by_a_check_that_never_saw_it():
    """Two adult hospitals whose films differ from children's in two different ways: a check fitted on both
    catches both, but each hospital, left out, is measured by a check that learnt only the other's way."""
    rng = np.random.default_rng(5)
    children, selection = fake_set(rng, 120, 0, 0.0), fake_set(rng, 60, 0, 0.0)
    like, unlike = fake_set(rng, 60, 1, 1.5), fake_set(rng, 60, 1, 1.5)
    for features in unlike.variants.values():  # its shift moved to directions no other hospital shows
        features.regions[:] = np.roll(features.regions, 8, axis=1)
    like.files, unlike.files = [f"a{i}" for i in range(60)], [f"b{i}" for i in range(60)]
    like.sources, unlike.sources = np.full(60, "NIH"), np.full(60, "JSRT")
    adults = scope_fit.joined(like, unlike)
    assert len(adults) == 120 and adults.files[60] == "b0" and list(adults.sources[58:62]) == ["NIH"] * 2 + ["JSRT"] * 2
    np.testing.assert_array_equal(adults.variants["photo"].regions[60:], unlike.variants["photo"].regions)
    sets = scope_fit.Sets(children, selection, adults)
    assert population.source_counts(adults) == {"JSRT": 60, "NIH": 60}
    assert population.cross_validate(sets, None, seed=3)["gated"]["original"]["adults"] > 0.9  # both seen
    measured = population.leave_one_source_out(sets, None, seed=3)
    assert set(measured) == {"NIH", "JSRT"} and measured["NIH"]["films"] == 60
    assert measured["NIH"]["routed_as_adults"]["original"] < 0.5
    assert measured["JSRT"]["routed_as_adults"]["original"] < 0.5
    assert population.leave_one_source_out(scope_fit.Sets(children, selection, like), None) == {}


def test_the_population_threshold_is_the_fitted_cut_once_saved(tmp_path):
    """The threshold lies midway between the highest child's P(adult) that keeps its verdict and the next one,
    and it is stored to the last bit: a film at the cut keeps the side the fit meant (float32 once moved
    0.78856476's cut to 0.78856474, below the film it was meant to sit above)."""
    measured = population.cross_validate(fake_sets(7), None, seed=3)
    children = np.sort(measured["scores"]["original"][0])
    threshold = measured["threshold"]
    kept, above = children[children < threshold].max(), children[children >= threshold]
    assert threshold == (kept + (above.min() if len(above) else 1.0)) / 2 and threshold - kept > 1e-6
    assert np.mean(children >= threshold) <= population.GATED_CHILDREN
    check = population.fit(population.rows(fake_sets(7), None), seed=3)
    check.threshold = threshold
    check.save(tmp_path / POPULATION_FILE)
    loaded = type(check).load(tmp_path)
    assert loaded.threshold == threshold  # float64, as fitted
    probe = fake_sets(7).adults.variants["original"].regions
    # The fit's read-out computes what the saved one serves, to the last bit (training/readout.py: as_saved).
    assert np.array_equal(loaded.adult_probability(probe), check.adult_probability(probe))
    # Where a cut falls between two films a float32 step apart, each keeps its side once saved.
    cut = np.float32(0.78856476)
    below, above = float(np.nextafter(cut, np.float32(0))), float(cut)
    check.threshold = (below + above) / 2
    check.save(tmp_path / POPULATION_FILE)
    stored = type(check).load(tmp_path).threshold
    assert below < stored <= above


def test_the_chest_x_ray_check_is_fitted_as_it_serves(tmp_path):
    """ood.npz (and adult_check.npz): the distances the threshold is chosen on are the ones the saved check
    computes, and no film sits on the cut, so none changes sides once saved."""
    from pneumo.checks.ood import FeatureCheck
    from training.checks import ood as ood_fit

    rng = np.random.default_rng(8)
    train, selection = (np.expm1(np.abs(rng.normal(1.0, 0.3, (n, 32)))) for n in (400, 200))
    check = ood_fit.fit_check(train, selection, components=8)
    check.save(tmp_path / "ood.npz")
    loaded = FeatureCheck.load(tmp_path, "ood.npz")
    assert loaded.threshold == check.threshold
    for features in (train, selection):
        distances = check.distance(features)
        assert np.array_equal(loaded.distance(features), distances)
        assert np.mean(distances > check.threshold) <= ood_fit.FLAGGED_XRAYS
        assert np.abs(distances - check.threshold).min() > 1e-6


def test_check_saves_and_loads(tmp_path):
    sets = fake_sets(1)
    check = population.fit(population.rows(sets, None))
    check.threshold, check.adult_sensitivity = 0.7, 0.34
    check.save(tmp_path / POPULATION_FILE)
    loaded = type(check).load(tmp_path)
    probe = sets.adults.variants["original"].regions[:5]
    np.testing.assert_allclose(loaded.adult_probability(probe), check.adult_probability(probe), rtol=1e-4)
    assert loaded.threshold == pytest.approx(0.7) and loaded.adult_sensitivity == pytest.approx(0.34)


def test_the_bundled_thresholds_are_the_fitted_ones():
    """population.npz and adult.npz serve the thresholds their reports say were fitted, to the last bit."""
    from pneumo.answers.adult import AdultHead
    from pneumo.checks.population import PopulationCheck

    report = json.loads((BUNDLED_DIR / "population.json").read_text())
    assert PopulationCheck.load(BUNDLED_DIR).threshold == report["threshold"]
    report = json.loads((BUNDLED_DIR / "adult.json").read_text())
    assert AdultHead.load(BUNDLED_DIR).threshold == report["threshold"]


def test_the_jsrt_half_the_adult_answer_learns_is_the_one_already_scored(tmp_path):
    """The full fit scores every JSRT film once (with the adults, for the population check) and hands the
    adult answer its learnt half from those scores: the same films, the same features as scoring them anew."""
    jsrt = ADULT_DATA.parent / "lung_masks"
    require(jsrt.is_dir(), f"JSRT films not found at {jsrt}")
    folder = tmp_path / "lung_masks"
    (folder / "images").mkdir(parents=True)
    for path in sorted((jsrt / "images").glob("*.png"))[:6]:
        (folder / "images" / path.name).write_bytes(path.read_bytes())
    loaded = load_model(BUNDLED_DIR)
    adults = scope_fit.score_jsrt(loaded, folder, ("site",), 3)
    taken = scope_fit.jsrt_tuning(loaded, folder, 0, adults)
    scored = scope_fit.jsrt_tuning(loaded, folder, 0)
    assert taken.files == scored.files == [p.name for p in scope_fit.jsrt_halves(folder)[0]]
    np.testing.assert_array_equal(taken.variants["original"].adult_trunk, scored.variants["original"].adult_trunk)
