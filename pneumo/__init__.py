"""Pneumonia Detector's inference library, shared by the app and training.

    pneumo.__version__            the version in pyproject.toml (`pneumo --version`, `pneumo info`)
    pneumo.install_hint(extra)    how to install an extra, in the words of a checkout and of a wheel

The library's own pages: docs/library.md.
"""

from pathlib import Path

DISTRIBUTION = "pneumonia-detector"  # pyproject.toml's project name


def _version() -> str | None:
    """From a checkout, pyproject.toml beside the package (an installed copy's metadata there may be stale);
    installed, the package's metadata; None when neither says."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (OSError, ValueError):
            project = {}
        if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
            return project["version"]
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


__version__ = _version()


def install_hint(extra: str) -> str:
    """`pip install` of an extra: the package is on no public index, so the checkout's way comes first."""
    return f"pip install '.[{extra}]' in the checkout (or '{DISTRIBUTION}[{extra}]' from a wheel of it)"
