"""docs/library.md runs as written: its Python blocks, in order, in one interpreter, from a folder that holds
the checkout's examples/ (so that what it saves lands there), on the bundled model."""

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT

PAGE = ROOT / "docs" / "library.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_library_page_runs_as_written(tmp_path):
    code = blocks()
    assert len(code) >= 6, "the page lost its examples"
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", "\n".join(code)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "ok child PNEUMONIA", done.stdout
    assert any(line.startswith("adult NORMAL") for line in lines), done.stdout
    assert (tmp_path / "heatmap.png").is_file()
    import pneumo

    assert lines[-1] == pneumo.__version__
