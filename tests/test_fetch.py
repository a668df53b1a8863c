"""pneumo.inputs.fetch: what an MCP client sends (a data URI or a URL) -> bytes, within the upload limits."""

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pneumo.inputs import fetch
from pneumo.inputs.decode import MAX_FILE_BYTES, InputError

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Handler(BaseHTTPRequestHandler):
    sent = 0  # bytes the endless stream wrote, to show the client stopped reading

    def log_message(self, *args):
        pass

    def do_GET(self):
        routes = {"/xray.png": self.file, "/loop": self.loop, "/liar": self.liar, "/endless": self.endless,
                  "/slow": self.slow, "/trickle": self.trickle, "/to-file": self.to_file}
        routes.get(self.path, lambda: self.send_error(404))()

    def file(self):
        self.reply(PNG)

    def reply(self, data, headers=()):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        for header in headers:
            self.send_header(*header)
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def to_file(self):
        self.redirect("/xray.png")

    def loop(self):
        self.redirect("/loop")

    def liar(self):  # declares more than the limit
        self.send_response(200)
        self.send_header("Content-Length", str(MAX_FILE_BYTES + 1))
        self.end_headers()

    def endless(self):  # no Content-Length: only the byte cap stops it
        self.send_response(200)
        self.end_headers()
        chunk = b"\0" * 65536
        try:
            while True:
                self.wfile.write(chunk)
                Handler.sent += len(chunk)
        except OSError:
            pass

    def slow(self):
        time.sleep(2)
        self.reply(PNG)

    def trickle(self):  # each byte within the read timeout, the whole beyond the deadline
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(50):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def read(text):
    return fetch.read_reference(text, allow_private=True)


def test_a_data_uri_gives_its_bytes():
    assert read("data:image/png;base64," + base64.b64encode(PNG).decode()) == PNG


@pytest.mark.parametrize("text, message", [
    ("data:image/png," + "x" * 10, "base64"),
    ("data:image/png;base64,@@@@", "not valid"),
    ("data:image/png;base64," + "A" * (MAX_FILE_BYTES // 3 * 4 + 400), "32 MB"),
    ("file:///etc/passwd", "data URI"),
    ("", "data URI"),
])
def test_bad_data_uris_and_other_schemes_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        read(text)


def test_a_url_gives_its_bytes_through_a_redirect(server):
    assert read(f"{server}/to-file") == PNG


@pytest.mark.parametrize("path, message", [
    ("/missing", "HTTP 404"), ("/loop", "redirected more than"), ("/liar", "larger than the 32 MB"),
])
def test_url_problems_say_what_went_wrong(server, path, message):
    with pytest.raises(InputError, match=message):
        read(server + path)


def test_a_stream_without_length_stops_at_the_cap(server):
    with pytest.raises(InputError, match="larger than the 32 MB"):
        read(f"{server}/endless")
    time.sleep(0.5)  # the server notices the closed connection
    assert Handler.sent < 4 * MAX_FILE_BYTES  # not unbounded (socket buffers hold a little more)


def test_slow_servers_time_out(server, monkeypatch):
    monkeypatch.setattr(fetch, "TIMEOUT_S", 0.5)
    with pytest.raises(InputError, match="did not answer"):
        read(f"{server}/slow")
    monkeypatch.setattr(fetch, "DEADLINE_S", 1)
    started = time.monotonic()
    with pytest.raises(InputError, match="took longer than 1 s"):
        read(f"{server}/trickle")
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.png", "http://localhost/x.png", "http://[::1]/x.png",
                                 "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.png"])
def test_private_addresses_are_refused_unless_allowed(url):
    with pytest.raises(InputError, match="private, loopback or link-local"):
        fetch.read_reference(url)


def test_unknown_hosts_are_named():
    with pytest.raises(InputError, match="could not be found"):
        fetch.read_reference("http://no-such-host.invalid/x.png")


def test_the_hubs_own_hosts_are_trusted_though_spaces_resolve_them_privately(monkeypatch):
    private = [(0, 0, 0, "", ("10.0.0.7", 443))]
    monkeypatch.setattr(fetch.socket, "getaddrinfo", lambda *args, **kwargs: private)
    for url in ("https://huggingface.co/x.png", "https://cdn-lfs.hf.co/x.png"):
        fetch._refuse_private_host(url)
    for url in ("https://evilhuggingface.co/x.png", "https://huggingface.co.evil.example/x.png"):
        with pytest.raises(InputError, match="private"):
            fetch._refuse_private_host(url)
