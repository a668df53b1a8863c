"""Nothing skips silently: optional imports and real data go through conftest's
`require`, which skips outside CI and fails under CI=true."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = '''
from tests.conftest import require_import
no_such = require_import("no_such_module_for_the_test")

def test_never_runs():
    pass
'''


def run_probe(tmp_path, ci):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path / "test_probe.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_module_skips_with_its_name_outside_ci(tmp_path):
    run = run_probe(tmp_path, ci="false")
    assert run.returncode in (0, 5) and "1 skipped" in run.stdout, run.stdout  # 5: the module was skipped whole
    assert "no_such_module_for_the_test" in run.stdout


def test_a_missing_module_fails_under_ci(tmp_path):
    run = run_probe(tmp_path, ci="true")
    assert run.returncode != 0 and "required under CI=true" in run.stdout, run.stdout


@pytest.mark.parametrize("pattern", [r"importorskip\(", r"if SHARED_DATA\.is_dir\(\)", r"pytest\.skip\("])
def test_no_test_skips_around_require(pattern):
    """A skip that bypasses `require` would also skip under CI=true."""
    offenders = [path.name for path in (ROOT / "tests").glob("*.py")
                 if path.name not in ("conftest.py", "test_require.py") and re.search(pattern, path.read_text())]
    assert not offenders, f"{pattern} in {offenders}: use tests.conftest.require / require_import"
