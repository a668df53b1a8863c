"""The Gradio variables the app reads, checked before gradio is imported.

    options = check_at_start_up(argv, environ)   # AppOptions(share, mcp), or exit 2 with one line
    requested(argv, environ)                      # MCP asked for? (the flag or GRADIO_MCP_SERVER)

Gradio reads GRADIO_SERVER_PORT when it is imported (int(...): a traceback for "abc"), and
compares GRADIO_MCP_SERVER and GRADIO_SHARE with "true" alone, so `yes` or `1` would start
the app quietly without what was asked for. Here they are checked as the PNEUMO_* ones are
(pneumo/settings.py): the usual spellings of a switch, or a message that names the variable.
"""

import sys
from dataclasses import dataclass

from pneumo.settings import EXIT_BAD_SETTING, FALSE, TRUE, SettingError

SWITCHES = {"GRADIO_MCP_SERVER": "--mcp", "GRADIO_SHARE": "--share"}
PORT = "GRADIO_SERVER_PORT"


@dataclass(frozen=True)
class AppOptions:
    share: bool  # --share or GRADIO_SHARE: ask for a public link
    mcp: bool  # --mcp or GRADIO_MCP_SERVER: also serve the MCP tool


def switch(name: str, environ) -> bool:
    """GRADIO_MCP_SERVER / GRADIO_SHARE: 1, true, yes, on (any case) or 0, false, no, off, empty."""
    text = environ.get(name, "").strip()
    if text.lower() not in TRUE + FALSE:
        raise SettingError(f"{name}={environ[name]!r} is not valid: expected 1 or 0 (true or false, yes or no)")
    return text.lower() in TRUE


def port(environ) -> int | None:
    text = environ.get(PORT, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise SettingError(f"{PORT}={environ[PORT]!r} is not valid: expected a port number from 1 to 65535")
    return value


def requested(argv, environ) -> bool:
    """`python app.py --mcp`, or GRADIO_MCP_SERVER switched on. Raises SettingError for a malformed value."""
    return "--mcp" in argv or switch("GRADIO_MCP_SERVER", environ)


def check(argv, environ) -> AppOptions:
    """Every Gradio variable the app reads; SettingError names the first malformed one."""
    port(environ)
    return AppOptions(share="--share" in argv or switch("GRADIO_SHARE", environ), mcp=requested(argv, environ))


def check_at_start_up(argv, environ) -> AppOptions:
    """check(), or end the process (exit code 2) with one line that names the variable, never a traceback."""
    try:
        return check(argv, environ)
    except SettingError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTING) from None
