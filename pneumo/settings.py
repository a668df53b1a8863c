"""Every PNEUMO_* environment variable, read and checked in one place.

    setting(name)         the checked value of one variable (its default when unset)
    check_all()           check every variable; raises SettingError, which names it
    check_at_start_up()   check_all(), or exit with the message; a warning per unknown PNEUMO_* name
    unknown_names()       PNEUMO_* variables that are set but mean nothing here (typos)
    use_own_upload_folder()   where Gradio keeps uploads: GRADIO_TEMP_DIR, else a folder of this app's own
    limit_malloc_arenas()     the server's threads share two malloc arenas (glibc), not one each

The app and the `pneumo` command call check_at_start_up() before anything else, so a
malformed value (PNEUMO_ONNX_THREADS=four) stops start-up with a message
that names the variable, instead of surfacing later as a runtime that
quietly fails to load while another one serves. setting() reads the
environment when called; pneumo/inputs/sandbox.py and ui/uploads.py take their
limits once, when imported.
README "Configuration" lists the same variables.
"""

import ctypes
import difflib
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pneumo.model.runtime_names import RUNTIMES

# Uploads (medical data) go here unless GRADIO_TEMP_DIR says otherwise: never Gradio's
# default /tmp/gradio, which every Gradio app of the user shares and which the sweeper empties.
OWN_UPLOAD_FOLDER = "pneumonia-detector"
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class SettingError(ValueError):
    """A PNEUMO_* variable holds a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Variable:
    parse: Callable[[str], Any]  # the stripped text -> the value; ValueError says what is expected
    default: Any = None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _positive_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError
    return value


def _runtime(text: str) -> str:
    if text.lower() not in RUNTIMES:
        raise ValueError
    return text.lower()


def _flag(text: str) -> bool:
    if text.lower() not in TRUE + FALSE:
        raise ValueError
    return text.lower() in TRUE


def _hub_repo(text: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        raise ValueError from None
    return text


def _text(text: str) -> str:
    return text


# What each parser expects, in the error message's words.
EXPECTED = {_positive_int: "a whole number of at least 1", _positive_number: "a number greater than 0",
            _runtime: "one of " + ", ".join(RUNTIMES), _flag: "1 or 0 (true or false)",
            _hub_repo: "a Hub repo id such as owner/name"}

VARIABLES = {
    # Which model serves (pneumo/model/loading.py) and what computes it (pneumo/model/runtime.py)
    "PNEUMO_MODEL_PATH": Variable(_text),
    "PNEUMO_MODEL_REPO": Variable(_hub_repo),
    "PNEUMO_MODEL_REVISION": Variable(_text),
    "PNEUMO_RUNTIME": Variable(_runtime, "auto"),
    "PNEUMO_ONNX_THREADS": Variable(_positive_int),  # None: the cores this process may use
    # The decoding workers' limits (pneumo/inputs/sandbox.py)
    "PNEUMO_DECODE_MEMORY_MB": Variable(_positive_int, 1024),
    "PNEUMO_DECODE_CPU_S": Variable(_positive_int, 7),
    "PNEUMO_DECODE_TIMEOUT_S": Variable(_positive_number, 8.0),
    # The upload folder's sweeper (ui/uploads.py)
    "PNEUMO_KEEP_UPLOADS_S": Variable(_positive_number, 60.0),
    "PNEUMO_SWEEP_EVERY_S": Variable(_positive_number, 10.0),
    # The MCP tool (app.py, pneumo/inputs/fetch.py)
    "PNEUMO_ALLOW_PRIVATE_URLS": Variable(_flag, False),
    # Training (training/train.py, training/checks/scope.py, training/deploy/quantize.py)
    "PNEUMO_DATA_DIR": Variable(_text, "../shared/data/chest_xray"),
    "PNEUMO_ADULT_DATA_DIR": Variable(_text),
    "PNEUMO_JSRT_DIR": Variable(_text),
    "PNEUMO_TRAIN_WORKERS": Variable(_positive_int),  # None: training.train.default_workers()
    # training/colab.ipynb reads these itself
    "PNEUMO_NOTEBOOK_TEST": Variable(_flag, False),
    "PNEUMO_RUN_DIR": Variable(_text),
    "PNEUMO_TRAIN_ARGS": Variable(_text),
    "PNEUMO_HUB_REPO": Variable(_text),
}


def setting(name: str):
    """The value of PNEUMO_`name`, checked; its default when unset or empty."""
    variable = VARIABLES[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return variable.default
    try:
        return variable.parse(text)
    except ValueError:
        expected = EXPECTED.get(variable.parse, "another value")
        raise SettingError(f"{name}={os.environ[name]!r} is not valid: expected {expected}") from None


def check_all() -> dict:
    """Every variable's value; the first malformed one raises SettingError."""
    return {name: setting(name) for name in VARIABLES}


EXIT_BAD_SETTING = 2  # a usage error, as argparse's


def check_at_start_up() -> None:
    """For the app and the CLI, first thing: a malformed value ends the process here
    (exit code 2) with one line that names the variable, never a traceback."""
    try:
        check_all()
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTING) from None
    for name in unknown_names():
        print(unknown_name_warning(name), file=sys.stderr)


def unknown_names() -> list[str]:
    return sorted(name for name in os.environ if name.startswith("PNEUMO_") and name not in VARIABLES)


def unknown_name_warning(name: str) -> str:
    """The warning for a PNEUMO_* name that is no setting, with the likely one when the name is close to one."""
    close = difflib.get_close_matches(name.upper(), VARIABLES, n=1, cutoff=0.75)
    meant = f"; did you mean {close[0]}?" if close else ""
    return f"warning: {name} is set but is no setting of pneumo{meant} (docs/configuration.md lists them)"


def use_own_upload_folder() -> Path:
    """Where Gradio keeps this app's uploads and heatmaps, which the sweeper empties:
    GRADIO_TEMP_DIR when set, else <temp>/pneumonia-detector (not Gradio's shared
    <temp>/gradio). Call before importing gradio, which reads the variable at import."""
    explicit = os.environ.get("GRADIO_TEMP_DIR", "").strip()
    folder = Path(explicit) if explicit else Path(tempfile.gettempdir()) / OWN_UPLOAD_FOLDER
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not explicit:
        folder.chmod(0o700)  # uploads are medical data: the owner's only, even if an older run made it
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let the threads that come after share `arenas` malloc arenas; False where the C library is not glibc.

    glibc gives a thread that allocates while others do an arena of its own, up to eight per core, and an
    arena keeps the memory it once held: the app's request threads (Gradio's, ONNX Runtime's) each kept a
    film's worth. Two arenas, under 16 clients on the 2-core Xeon: the server's peak RSS 429 MB instead of
    458, requests/s no lower (5.9 against 5.6). Call it first, before threads start."""
    try:
        return ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):  # no C library to ask, or one without mallopt
        return False
