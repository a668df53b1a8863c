"""How pneumo/model/onnx_runtime.py sets up its ONNX Runtime sessions, on the bundled model (no training)."""

import threading
import time

import pytest

from pneumo.model import cpu
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.model.onnx_runtime import OnePassAtATime

VNNI, NO_VNNI = {"avx2", "avx512f", "avx512_vnni"}, {"sse4_2", "avx2", "fma"}
EXACT_INT8 = "session.x64quantprecision"


def config_entry(session, key):
    """A session's config entry, or None where it was never set."""
    try:
        return session.get_session_options().get_session_config_entry(key)
    except RuntimeError:  # onnxruntime's way to say "not set"
        return None


@pytest.mark.parametrize("flags, exact", [(VNNI, None), (NO_VNNI, "1")])
def test_int8_asks_for_exact_sums_only_without_vnni(flags, exact, monkeypatch):
    """Without VNNI the int8 kernels may saturate, so the sessions ask for exact sums; with VNNI they sum
    in 32 bits by themselves, and asking costs the pass 3-4 times its time. Both int8 sessions: the
    children's model and the adult trunk."""
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    loaded = load_model(BUNDLED_DIR, runtime="onnx-int8")
    assert config_entry(loaded.runtime._session, EXACT_INT8) == exact
    assert config_entry(loaded.adult_trunk._session, EXACT_INT8) == exact


def test_a_session_runs_one_pass_at_a_time():
    """Passes side by side would only share the cores, each with its own activations in memory."""

    class Counting:
        def __init__(self):
            self.lock, self.running, self.most = threading.Lock(), 0, 0

        def run(self, outputs, feed):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.01)
            with self.lock:
                self.running -= 1
            return feed

        def get_inputs(self):
            return ["input"]

    counting = Counting()
    session = OnePassAtATime(counting)
    threads = [threading.Thread(target=lambda: [session.run(None, {}) for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.most == 1
    assert session.get_inputs() == ["input"] and session.run(None, {"x": 1}) == {"x": 1}
    with pytest.raises(AttributeError):
        session._private  # noqa: B018


def test_every_session_of_the_model_is_one_pass_at_a_time():
    loaded = load_model(BUNDLED_DIR, runtime="onnx-int8")
    for found in (loaded.runtime._session, loaded.adult_trunk._session, loaded.segmenter.session):
        assert isinstance(found, OnePassAtATime)
