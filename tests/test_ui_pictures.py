"""The heatmap picture as the app writes it (ui/pictures.py): a lossless PNG in Gradio's cache layout."""

import numpy as np
from PIL import Image

from tests.conftest import require_import

require_import("gradio")
from ui.pictures import HeatmapImage, save_png  # noqa: E402


def overlay_like(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (416, 384, 3), dtype=np.uint8))


def test_save_png_writes_the_same_pixels_under_a_hash_of_the_bytes(tmp_path):
    picture = overlay_like()
    path = save_png(picture, tmp_path)
    assert path.endswith("/image.png") and path.startswith(str(tmp_path.resolve()))
    with Image.open(path) as written:
        assert written.format == "PNG" and written.mode == "RGB"
        assert np.array_equal(np.asarray(written), np.asarray(picture))  # lossless
    # The same picture again: the same file, and no staging file left beside it.
    assert save_png(picture, tmp_path) == path
    assert [entry.name for entry in (tmp_path.resolve() / path.split("/")[-2]).iterdir()] == ["image.png"]
    assert save_png(overlay_like(seed=1), tmp_path) != path


def test_the_component_sends_a_pil_picture_as_a_png_in_its_cache(tmp_path):
    component = HeatmapImage(type="pil", format="png", interactive=False)
    component.GRADIO_CACHE = str(tmp_path)
    sent = component.postprocess(overlay_like())
    assert sent.path.startswith(str(tmp_path.resolve())) and sent.path.endswith(".png")
    assert component.postprocess(None) is None  # no verdict, no picture
    assert component.get_block_name() == "image"  # the browser's own image component shows it
