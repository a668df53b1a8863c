"""Turned and inverted films (pneumo/inputs/orientation.py): found, turned back, said so."""

import numpy as np
import pytest
from PIL import Image

from pneumo.analysis import analyse_many
from pneumo.inputs.decode import decode
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.inputs.orientation import UPRIGHT, WAYS, OrientationCheck, altered, note, restored, thumbnail, upright
from pneumo.inputs.photo import Film
from training.checks.orientation import all_ways

# One film of each kind from val/, none of them the app's examples.
FILMS = ["val/NORMAL/NORMAL2-IM-0135-0001.jpeg", "val/PNEUMONIA/person101_bacteria_483.jpeg",
         "val/PNEUMONIA/person1608_virus_2786.jpeg"]


@pytest.fixture(scope="module")
def check():
    loaded = OrientationCheck.load(BUNDLED_DIR)
    assert loaded is not None and 0.5 <= loaded.threshold < 1
    return loaded


def test_the_notes_say_what_was_done():
    assert note(WAYS.index((180, False))) == "The film was upside down; it was turned before analysis."
    assert note(WAYS.index((90, True))) == ("The film was on its side and had its grey levels inverted; "
                                            "it was turned and inverted back before analysis.")
    assert note(WAYS.index((0, True))) == "The film had its grey levels inverted; it was inverted back before analysis."


def test_restored_undoes_altered_in_every_way():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70), dtype=np.uint8))
    for way in range(len(WAYS)):
        assert np.array_equal(np.asarray(restored(altered(image, way), way)), np.asarray(image)), WAYS[way]
    assert altered(image, WAYS.index((90, False))).size == (40, 70)


def test_the_fit_turns_thumbnails_as_the_server_turns_films():
    """training/checks/orientation.py turns and inverts thumbnails, not films: the two must agree."""
    y, x = np.mgrid[0:300, 0:240]
    image = Image.fromarray(np.uint8(100 + 80 * np.sin(x / 17.0) * np.cos(y / 29.0) + y / 4))
    ways, _ = all_ways(thumbnail(image)[None])
    for way in range(len(WAYS)):
        served = thumbnail(altered(image, way))
        assert np.corrcoef(served, ways[way])[0, 1] > 0.99, WAYS[way]


def test_a_colour_image_is_never_turned(check):
    colourful = Film(Image.new("RGB", (100, 100), (200, 30, 30)))
    assert upright(colourful, check) is colourful


def test_real_films_are_found_in_every_way(check, shared_data):
    for name in FILMS:
        image = decode(shared_data / name).image
        found = [check.way_of(altered(image, way)) for way in range(len(WAYS))]
        assert found == list(range(len(WAYS))), name


def test_an_upside_down_film_is_turned_back_and_answered_as_the_upright_one(shared_data):
    loaded = load_model()
    images = [decode(shared_data / name).image for name in FILMS]
    as_stored = analyse_many(images, loaded)
    upside_down = analyse_many([altered(image, WAYS.index((180, False))) for image in images], loaded)
    inverted = analyse_many([altered(image, WAYS.index((0, True))) for image in images], loaded)
    for stored, turned, negative in zip(as_stored, upside_down, inverted):
        assert not any("before analysis" in w for w in stored.warnings)
        assert "The film was upside down; it was turned before analysis." in turned.warnings
        assert any("inverted back" in w for w in negative.warnings)
        for other in (turned, negative):
            assert other.scope == stored.scope and other.label == stored.label
            assert other.pneumonia_probability == pytest.approx(stored.pneumonia_probability, abs=1e-6)
    assert UPRIGHT == 0 and WAYS[UPRIGHT] == (0, False)
