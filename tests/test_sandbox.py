"""pneumo.inputs.sandbox: workers that run out of memory or time are stopped and replaced; nothing else notices."""

import numpy as np
import pytest
from PIL import Image

from pneumo.inputs.decode import InputError
from pneumo.inputs.sandbox import DecoderPool
from tests.hostile_files import element_flood_dicom, limit_float_tiff


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.png"
    Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (150, 1))).save(path)
    return path


def refusal(pool, path) -> str:
    with pytest.raises(InputError) as error:
        pool.decode(path)
    return str(error.value)


def test_a_good_file_comes_back_as_the_same_pixels(good):
    pool = DecoderPool(size=1)
    try:
        decoded = pool.decode(good)
        assert decoded.kind == "image" and decoded.image.mode == "L"
        np.testing.assert_array_equal(np.asarray(decoded.image), np.asarray(Image.open(good)))
        assert "not found" in refusal(pool, good.with_name("missing.png"))  # the worker's own refusal
        assert pool.decode(good).image.size == (200, 150)  # and the same worker goes on
    finally:
        pool.close()


def test_out_of_memory_is_a_message_and_the_pool_carries_on(tmp_path, good):
    path = tmp_path / "float.tiff"
    path.write_bytes(limit_float_tiff())
    pool = DecoderPool(size=1, memory_mb=300)  # the 49-megapixel float TIFF needs more
    try:
        assert "than this server allows" in refusal(pool, path)
        assert pool.decode(good).image.size == (200, 150)
    finally:
        pool.close()


def test_a_slow_file_is_stopped_and_the_worker_replaced(tmp_path, good):
    path = tmp_path / "flood.dcm"
    path.write_bytes(element_flood_dicom(1_000_000))
    pool = DecoderPool(size=1, timeout_s=0.5)
    try:
        pool.decode(good)  # the worker has started
        first = next(iter(pool._all))
        assert "took longer than" in refusal(pool, path)
        assert first.process.poll() is not None  # killed
        assert pool.decode(good).image.size == (200, 150)  # by a fresh worker
    finally:
        pool.close()
