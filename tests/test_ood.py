"""The not-a-chest-X-ray check: image statistics, the fitted feature check,
and what the CLI, the app and the real model make of it."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.analysis import analyse, analyse_many
from pneumo.checks.ood import FeatureCheck, feature_distance_reason, statistics_reason
from pneumo.model.run_folder import OOD as FILE
from pneumo.checks.scope import NOT_CHEST_XRAY, OK
from tests.conftest import require, require_import, synthetic_xray
from tests.test_cli import run_cli
from training.checks import ood as training_ood

skimage_data = require_import("skimage.data")

# Greyscale pictures: the statistics alone cannot tell them from X-rays.
GREY_PICTURES = ["camera", "moon", "page", "text", "coins", "clock", "cell"]


def not_xrays():
    rng = np.random.default_rng(0)
    return {
        "black": Image.new("L", (256, 256), 0),
        "grey": Image.new("L", (256, 256), 128),
        "noise": Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)),
        "colour photo": Image.fromarray(skimage_data.astronaut()),
        "colour noise": Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
    }


# --- image statistics ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(not_xrays()))
def test_statistics_flag_blank_noise_and_colour(name):
    assert statistics_reason(not_xrays()[name]) is not None


def test_statistics_pass_synthetic_xrays():
    for i, kind in enumerate(["normal", "bacteria", "virus"]):
        assert statistics_reason(synthetic_xray(kind, seed=i, size=256)) is None


def test_statistics_pass_real_xrays(shared_data):
    paths = sorted((shared_data / "val" / "NORMAL").glob("*.jpeg"))[:5]
    assert len(paths) == 5, f"too few X-rays in {shared_data / 'val' / 'NORMAL'}"
    for path in paths:
        with Image.open(path) as image:
            assert statistics_reason(image) is None, path


def test_the_tiny_model_flags_them_and_not_an_xray(tiny_run):
    """tiny_run has too few images for a feature fit: the statistics alone decide."""
    loaded = load_model(tiny_run)
    assert not (tiny_run / FILE).exists() and loaded.ood_check is None
    for name, image in not_xrays().items():
        analysis = analyse(image, loaded)
        assert analysis.scope == NOT_CHEST_XRAY and analysis.label is None, name
        assert analysis.reason.startswith(("This does not look like a chest X-ray", "This photo does not")), name
    batch = analyse_many([synthetic_xray("virus", seed=3, size=128), not_xrays()["noise"]], loaded)
    assert batch[0].scope == OK and batch[1].scope == NOT_CHEST_XRAY


# --- the feature check, on synthetic features ---------------------------------------


def gaussian_cloud(rng, n, features=64, rank=5):
    """Positive 'pooled features' whose log1p is a low-rank Gaussian cloud, like ReLU features."""
    basis = np.random.default_rng(42).normal(size=(rank, features))  # one shared structure
    latent = 2.0 + rng.normal(size=(n, rank)) @ basis * 0.2 + rng.normal(0, 0.02, (n, features))
    return np.expm1(latent)


def test_far_points_flagged_near_points_not():
    rng = np.random.default_rng(0)
    check = training_ood.fit_check(gaussian_cloud(rng, 2000), gaussian_cloud(rng, 300), components=8)
    near = check.distance(gaussian_cloud(rng, 1000))
    assert np.mean(near > check.threshold) <= 0.03

    latent = FeatureCheck.transform(gaussian_cloud(rng, 200))
    along = latent + 20 * check.scales[0] * check.components[0]  # far along the main direction
    off = latent + rng.normal(0, 0.3, latent.shape)  # off the cloud's subspace
    for far in (along, off):
        assert np.all(check.distance(np.expm1(far)) > check.threshold)


def test_threshold_flags_at_most_one_percent_of_the_selection():
    rng = np.random.default_rng(1)
    selection = gaussian_cloud(rng, 304)
    check = training_ood.fit_check(gaussian_cloud(rng, 1000), selection)
    assert np.mean(check.distance(selection) > check.threshold) <= 0.01


def test_saved_check_is_small_and_loads_back(tmp_path):
    rng = np.random.default_rng(2)
    check = training_ood.fit_check(gaussian_cloud(rng, 600, features=512), gaussian_cloud(rng, 100, features=512))
    check.save(tmp_path / FILE)
    assert (tmp_path / FILE).stat().st_size < 300_000
    loaded = FeatureCheck.load(tmp_path)
    probe = gaussian_cloud(rng, 5, features=512)
    np.testing.assert_allclose(loaded.distance(probe), check.distance(probe), rtol=1e-4)
    assert FeatureCheck.load(tmp_path / "elsewhere") is None
    far = np.expm1(FeatureCheck.transform(probe[0]) + 1.0)
    assert feature_distance_reason(far, loaded)[0] is not None
    assert feature_distance_reason(far, None) == (None, None)  # no fitted check: nothing to say


def test_fit_in_the_run_folder_and_serve_it(tiny_run, synthetic_data, tmp_path, monkeypatch):
    """The report's last step (training/checks/scope.py) on the tiny model: both checks are written and served."""
    from training.checks import population
    from training.checks import scope

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    adults = tmp_path / "adults"
    adults.mkdir()
    for i in range(12):
        synthetic_xray("bacteria", seed=900 + i, size=80).save(adults / f"adult-{i}.jpeg")
    monkeypatch.setattr(scope, "MIN_FIT_IMAGES", 1)  # a toy run: fit anyway
    monkeypatch.setattr(population, "FOLDS", 2)
    report = scope.fit_and_save(run, synthetic_data, adults, seed=1, log=print)
    assert (run / FILE).stat().st_size < 300_000 and (run / "population.npz").is_file()
    assert set(report) == {"threshold", "adult_model", "cross_validated", "cross_validated_at", "adult_sources",
                           "one_source_left_out"}
    assert report["adult_sources"] == {"NIH": 12} and report["one_source_left_out"] == {}  # one hospital: none
    loaded = load_model(run)
    assert loaded.ood_check is not None and loaded.population_check is not None
    # One file and a batch take the same path, so the same answer from the checks.
    image = synthetic_xray("normal", seed=5, size=96)
    assert analyse(image, loaded).checks == pytest.approx(analyse_many([image], loaded)[0].checks, rel=1e-3)

    (run / FILE).write_bytes(b"not an npz")
    assert load_model(run).ood_check is None  # a broken file: statistics only, still serving


# --- CLI and app ----------------------------------------------------------------------


def test_cli_marks_a_photo(tiny_run, tmp_path):
    photo, xray = tmp_path / "photo.png", tmp_path / "xray.png"
    Image.fromarray(skimage_data.coffee()).save(photo)
    synthetic_xray("bacteria", seed=2, size=128).save(xray)
    result = run_cli("predict", "--json", photo, xray, model_path=tiny_run)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["scope"] == NOT_CHEST_XRAY and lines[0]["label"] is None
    assert lines[1]["scope"] == OK and lines[1]["label"] in ("NORMAL", "PNEUMONIA")
    table = run_cli("predict", photo, model_path=tiny_run)
    assert f"no verdict ({NOT_CHEST_XRAY})" in table.stdout


def test_app_shows_no_verdict_for_a_photo(tiny_app, monkeypatch, tmp_path):
    app = tiny_app
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # app.predict takes only files in the upload folder
    photo = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(photo, "PNG")
    path = tmp_path / "chelsea.png"
    path.write_bytes(photo.getvalue())
    result, heatmap = app.predict(str(path))
    assert result["scope"] == NOT_CHEST_XRAY and result["label"] is None and heatmap is None
    verdict, breakdown, notes, heatmap_panel, where = app.show(result)
    # Never None to a Label (its page cannot read it): "No verdict", the rest hidden.
    assert verdict["value"] == {"label": "No verdict", "confidences": []} and verdict["visible"] is True
    assert breakdown["value"] == {} and breakdown["visible"] is False and heatmap_panel["visible"] is False
    assert where == ""
    assert "does not seem to show a chest X-ray" in notes or "does not look like a chest X-ray" in notes
    assert NOT_CHEST_XRAY not in notes

    synthetic_xray("virus", 4, 128).save(tmp_path / "xray.png")
    result, heatmap = app.predict(str(tmp_path / "xray.png"))
    verdict, breakdown, notes, heatmap_panel, where = app.show(result)
    assert result["scope"] == OK and verdict["value"]["label"] == result["label"] and heatmap is not None
    assert breakdown["visible"] is True and breakdown["value"]["label"] in result["probabilities"]
    assert heatmap_panel["visible"] is True and app.HEATMAP_MEANING in where
    assert "calibrated on the children's validation X-rays" in notes


# --- the real model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled():
    require((BUNDLED_DIR / FILE).is_file(), f"no bundled model with {FILE} at {BUNDLED_DIR}")
    return load_model()


def test_real_model_passes_val_xrays(bundled, shared_data):
    paths = sorted((shared_data / "val").glob("*/*.jpeg"))[::3]  # about 100 of the 304
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("L"))
    flagged = [a.scope == NOT_CHEST_XRAY for a in analyse_many(images, bundled)]
    assert np.mean(flagged) <= 0.03  # the threshold lets at most 1% of all of val/ through


def test_real_model_flags_grey_pictures(bundled):
    """Greyscale photos and documents, mostly past the statistics: the features must catch them.
    Known limit: the orientation step turns the text page (it reads as a film on its side with inverted
    grey levels), and the turned page then passes as an X-ray and is only stopped by the adults' answer's
    own check; being refused, it carries no note of the turn (tests/test_entry_words.py)."""
    analyses = dict(zip(GREY_PICTURES, analyse_many([Image.fromarray(getattr(skimage_data, name)())
                                                     for name in GREY_PICTURES], bundled)))
    assert all(a.scope != OK for a in analyses.values()), {name: a.scope for name, a in analyses.items()}
    refused = {name for name, a in analyses.items() if a.scope == NOT_CHEST_XRAY}
    assert set(GREY_PICTURES) - refused <= {"page"}, refused
    assert not any("turned" in w for w in analyses["page"].warnings)
