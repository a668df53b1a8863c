"""The bytes behind an image reference that an AI assistant sends: a base64
data URI or an http(s) URL.

    read_reference(text) -> bytes     raises pneumo.inputs.decode.InputError

Both are held to the upload limit (pneumo.inputs.decode.MAX_FILE_BYTES) before
anything is decoded. URLs are fetched with a connect/read timeout and an
overall deadline, streamed with a byte cap (a missing or false
Content-Length cannot make the download unbounded), with at most
MAX_REDIRECTS redirects, and, unless allowed, only from public addresses:
a Space must not become a way to reach its own network (SSRF).
"""

import base64
import binascii
import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import httpx

from pneumo.inputs.decode import MAX_FILE_BYTES, InputError

TIMEOUT_S = 10  # connect and per-read timeout
DEADLINE_S = 30  # the whole download, so a server trickling bytes cannot hold a worker
MAX_REDIRECTS = 3
# Inside a Space, the Hub's own hosts resolve to private addresses (DNS splitting),
# yet they are public: Gradio trusts the same names for the same reason.
HUB_HOSTS = ("hf.co", "huggingface.co")
LIMIT_MB = MAX_FILE_BYTES // (1024 * 1024)


def read_reference(text: str, allow_private=False) -> bytes:
    """A data URI (`data:image/png;base64,...`) or an http(s) URL -> the file's bytes."""
    text = (text or "").strip()
    if text.startswith("data:"):
        return _from_data_uri(text)
    if text.lower().startswith(("http://", "https://")):
        return _download(text, allow_private)
    raise InputError("Send the image as a base64 data URI (data:image/jpeg;base64,...) or an http(s) URL.")


def _from_data_uri(text: str) -> bytes:
    header, comma, payload = text.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InputError("The data URI must be base64-encoded: data:<type>;base64,<data>.")
    # Check the size on the encoded text (4 characters per 3 bytes) before decoding it.
    if len(payload) > (MAX_FILE_BYTES + 2) // 3 * 4 + 4:
        raise InputError(f"The file is larger than the {LIMIT_MB} MB accepted.")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("The data URI's base64 data is not valid.") from None


def _download(url: str, allow_private: bool) -> bytes:
    deadline = time.monotonic() + DEADLINE_S
    with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            if not allow_private:
                _refuse_private_host(url)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InputError(f"The URL answered HTTP {response.status_code}, not the image.")
                    return _read_capped(response, deadline)
            except httpx.TimeoutException:
                raise InputError(f"The URL did not answer within {TIMEOUT_S} s.") from None
            except httpx.HTTPError as error:
                raise InputError(f"The URL could not be fetched ({type(error).__name__}).") from None
    raise InputError(f"The URL redirected more than {MAX_REDIRECTS} times.")


def _read_capped(response: httpx.Response, deadline: float) -> bytes:
    too_large = InputError(f"The file at the URL is larger than the {LIMIT_MB} MB accepted.")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FILE_BYTES:
        raise too_large
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise too_large
        if time.monotonic() > deadline:
            raise InputError(f"The download took longer than {DEADLINE_S} s.")
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_private_host(url: str) -> None:
    """Every address the host name resolves to must be public. (A host whose
    DNS answer changes between this check and the connection is not caught.)"""
    host = (urlsplit(url).hostname or "").lower()
    if any(host == name or host.endswith("." + name) for name in HUB_HOSTS):
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError):
        raise InputError(f"The URL's host {host!r} could not be found.") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        raise InputError("URLs on private, loopback or link-local addresses are not fetched.")
