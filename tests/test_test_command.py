"""The README's test command works for a newcomer: `.ci/run` runs exactly it, it never
installs a copy of the checkout (that goes stale after edits and leaves build/ behind),
a missing Chromium that cannot be installed does not stop it, and the README names the
data the tests read."""

import re
import subprocess

from tests.conftest import ADULT_DATA, ROOT, SHARED_DATA


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(r"Run the tests.*?```bash\n(.*?)\n```", readme, re.S).group(1)


def test_ci_runs_exactly_the_readmes_command():
    assert (ROOT / ".ci" / "run").read_text().rstrip("\n").splitlines()[-1] == readme_test_command()


def test_the_command_never_installs_the_checkout():
    for install in re.findall(r"pip install ([^&|;]*)", readme_test_command()):
        assert not re.search(r"(^|\s)\.(\s|$)", install), install


def chromium_step() -> str:
    return re.search(r"(\{ command -v chromium.*\}) && \S*python -m pytest$", readme_test_command()).group(1)


def test_no_chromium_and_no_root_does_not_stop_the_tests(tmp_path):
    """Off Debian or without root apt-get fails: the step says so and the command goes on to pytest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text("#!/bin/sh\necho 'E: could not open lock file (are you root?)' >&2\nexit 100\n")
    apt.chmod(0o755)
    done = subprocess.run(["/bin/bash", "-c", chromium_step() + " && echo PYTEST-WOULD-RUN"], capture_output=True,
                          text=True, env={"PATH": str(bin_dir)}, timeout=60)  # no chromium on this PATH
    assert done.returncode == 0 and "PYTEST-WOULD-RUN" in done.stdout, done.stderr
    assert "browser tests will skip" in done.stdout


def test_the_readme_names_the_data_the_tests_read():
    readme = (ROOT / "README.md").read_text()
    for folder in (SHARED_DATA, ADULT_DATA):
        assert f"../{folder.relative_to(ROOT.parent)}" in readme, folder
