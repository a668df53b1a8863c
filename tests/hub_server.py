"""A small Hugging Face Hub for tests: the write API the client's push uses,
and everything else forwarded to olah (a read-only Hub mirror of local git
repos), so one HF_ENDPOINT serves push and pull.

    python tests/hub_server.py --port P --mirrors DIR --upstream http://127.0.0.1:OLAH_PORT

Pushes become commits in `DIR/models/<org>/<name>` (non-bare git repos,
olah's layout), or `DIR/spaces/<org>/<name>` for Space repos; LFS files go
to `.git/lfs/objects/aa/bb/<oid>` and their pointer blobs are committed.
Spaces also get their file listing (`/api/spaces/.../tree/REV`) and their
variables (`/api/spaces/.../variables`, kept in memory) from this server. Refs move with `git update-ref OLD NEW`, so a
stale parentCommit gets 412 like on the Hub.

Two things it does beyond the Hub, both for tests:
- olah answers 401 RepoNotFound for a missing revision or file; this server
  answers those with the Hub's 404 RevisionNotFound / EntryNotFound instead.
- `POST /_test/corrupt?repo=ORG/NAME&file=FILE` makes later downloads of
  that file arrive with one byte flipped (headers unchanged), to test the
  client's integrity check.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REPO = r"/api/(?P<kind>models|spaces)/(?P<org>[\w.-]+)/(?P<name>[\w.-]+)"
SPACE = r"/api/spaces/(?P<org>[\w.-]+)/(?P<name>[\w.-]+)"
KINDS = {"model": "models", "space": "spaces"}  # repo type -> folder and URL segment
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's rule: big files, or binary ones, go to LFS
GIT_ENV = {"GIT_AUTHOR_NAME": "hub", "GIT_AUTHOR_EMAIL": "hub@localhost",
           "GIT_COMMITTER_NAME": "hub", "GIT_COMMITTER_EMAIL": "hub@localhost"}
# The git-lfs pointer olah recognises (120 to 150 bytes, this exact shape).
POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class HubError(Exception):
    def __init__(self, status, message, code=None, **extra):
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


class Hub:
    """The repos on disk and the git plumbing that changes them."""

    def __init__(self, mirrors):
        self.mirrors = Path(mirrors)
        self.lock = threading.Lock()  # one writer at a time keeps refs and indexes simple
        self.corrupt = set()
        self.variables = {}  # "org/name" of a Space -> {key: {"value", "description", "updatedAt"}}

    def path(self, org, name, kind="models"):
        return self.mirrors / kind / org / name

    def repo(self, org, name, kind="models"):
        path = self.path(org, name, kind)
        if not (path / ".git").is_dir():
            raise HubError(404, f"Repository {org}/{name} not found", "RepoNotFound")
        return path

    def git(self, path, *args, data=None, env=None):
        result = subprocess.run(["git", *args], cwd=path, input=data, capture_output=True,
                                env={**os.environ, **GIT_ENV, **(env or {})})
        if result.returncode:
            raise HubError(500, f"git {args[0]}: {result.stderr.decode().strip()}")
        return result.stdout.decode().strip()

    def resolve(self, path, revision):
        """A branch, tag or commit sha -> full commit sha (RevisionNotFound if none)."""
        try:
            return self.git(path, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
        except HubError:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound") from None

    def create(self, org, name, kind="models"):
        path = self.path(org, name, kind)
        if (path / ".git").is_dir():
            url = f"/{org}/{name}" if kind == "models" else f"/{kind}/{org}/{name}"
            raise HubError(409, f"You already created this {kind[:-1]} repo", url=url)
        path.mkdir(parents=True)
        self.git(path, "init", "--quiet", "--initial-branch=main")
        # The Hub starts every repo with a .gitattributes commit, so `main` exists at once.
        (path / ".gitattributes").write_text("*.keras filter=lfs diff=lfs merge=lfs -text\n")
        self.git(path, "add", ".gitattributes")
        self.git(path, "commit", "--quiet", "-m", "initial commit")

    def commit(self, org, name, branch, lines, kind="models"):
        path = self.repo(org, name, kind)
        header = lines[0]["value"]
        ref = f"refs/heads/{branch}"
        with self.lock:
            parent = self.resolve(path, ref)  # commits go to branches only
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, f"A commit has happened since {header['parentCommit']}; pull and retry")
            with tempfile.TemporaryDirectory() as tmp:
                env = {"GIT_INDEX_FILE": f"{tmp}/index"}  # a private index: the work tree stays as it is
                self.git(path, "read-tree", parent, env=env)
                for line in lines[1:]:
                    self.apply(path, line["key"], line["value"], env)
                tree = self.git(path, "write-tree", env=env)
            message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
            oid = self.git(path, "commit-tree", tree, "-p", parent, "-m", message)
            self.git(path, "update-ref", ref, oid, parent)  # fails if the branch moved meanwhile
        return oid

    def apply(self, path, key, value, env):
        if key == "deletedFile":
            self.git(path, "update-index", "--force-remove", value["path"], env=env)
            return
        if key == "file":
            data = base64.b64decode(value["content"])
        elif key == "lfsFile":
            if not self.lfs_object(path, value["oid"]).is_file():
                raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
            data = POINTER.format(**value).encode()
        else:
            raise HubError(400, f"unsupported commit line {key}")
        blob = self.git(path, "hash-object", "-w", "--stdin", data=data)
        self.git(path, "update-index", "--add", "--cacheinfo", f"100644,{blob},{value['path']}", env=env)

    def lfs_object(self, path, oid):
        return path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid

    def set_ref(self, org, name, kind, ref_name, start):
        path = self.repo(org, name)  # model repos only
        with self.lock:
            commit = self.resolve(path, start)
            if self.git(path, "for-each-ref", f"refs/{kind}/{ref_name}"):
                raise HubError(409, f"{kind[:-1]} {ref_name} already exists")
            self.git(path, "update-ref", f"refs/{kind}/{ref_name}", commit)

    def explain_not_found(self, url_path):
        """olah's 401 on a resolve URL -> the Hub's precise 404, or None to pass olah's answer on."""
        match = re.fullmatch(r"/([\w.-]+)/([\w.-]+)/resolve/([^/]+)/(.+)", url_path)
        if not match or not (self.path(*match.group(1, 2)) / ".git").is_dir():
            return None
        path, revision, file = self.path(*match.group(1, 2)), unquote(match.group(3)), unquote(match.group(4))
        commit = self.resolve(path, revision)  # raises RevisionNotFound
        return HubError(404, f"Entry not found: {file}", "EntryNotFound", commit=commit)


class Handler(BaseHTTPRequestHandler):
    hub: Hub
    upstream: str

    def log_message(self, *args):  # quiet: pytest shows the client's errors
        pass

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_GET(self):
        self.route("GET")

    def do_HEAD(self):
        self.route("HEAD")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        url = urlsplit(self.path)
        body = self.read_body()
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", lambda: {"errors": [], "warnings": []}),
            ("POST", REPO + r"/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", r"/(?:(?P<kind>spaces)/)?(?P<org>[\w.-]+)/(?P<name>[\w.-]+)\.git/info/lfs/objects/batch",
             self.lfs_batch),
            ("PUT", r"/_lfs/(?P<kind>models|spaces)/(?P<org>[\w.-]+)/(?P<name>[\w.-]+)/(?P<oid>[0-9a-f]{64})",
             self.lfs_put),
            ("GET", SPACE + r"/tree/(?P<rev>[^/]+)", self.space_tree),
            ("GET", SPACE + r"/variables", self.space_variables),
            ("POST", SPACE + r"/variables", self.add_space_variable),
            ("DELETE", SPACE + r"/variables", self.delete_space_variable),
            ("POST", REPO + r"/commit/(?P<rev>[^/]+)", self.commit),
            ("POST", REPO + r"/branch/(?P<rev>[^/]+)", self.create_branch),
            ("POST", REPO + r"/tag/(?P<rev>[^/]+)", self.create_tag),
            ("POST", r"/_test/corrupt", lambda: self.mark_corrupt(parse_qs(url.query))),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, url.path)
            if method == route_method and match:
                self.body = body
                self.args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                self.kind = self.args.pop("kind", "models")
                try:
                    self.reply(200, handler())
                except HubError as e:
                    self.error(e)
                return
        self.forward(method, body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def json(self):
        return json.loads(self.body or b"{}")

    def reply(self, status, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def error(self, e):
        headers = [("X-Error-Message", str(e))]
        if e.code:
            headers.append(("X-Error-Code", e.code))
        if "commit" in e.extra:
            headers.append(("X-Repo-Commit", e.extra.pop("commit")))
        url = e.extra.pop("url", None)
        self.reply(e.status, {"error": str(e), **({"url": self.base() + url} if url else {})}, headers)

    def base(self):
        return f"http://{self.headers['Host']}"

    # --- the write API -------------------------------------------------------

    def create_repo(self):
        payload = self.json()
        kind = KINDS.get(payload.get("type", "model"))
        if not kind or not payload.get("organization"):
            raise HubError(400, "this test Hub holds model and Space repos named org/name only")
        if kind == "spaces" and payload.get("sdk") not in ("gradio", "docker", "static"):
            raise HubError(400, f"invalid Space sdk {payload.get('sdk')!r}")
        org, name = payload["organization"], payload["name"]
        self.hub.create(org, name, kind)
        prefix = "" if kind == "models" else f"{kind}/"
        return {"url": f"{self.base()}/{prefix}{org}/{name}", "name": f"{org}/{name}"}

    def repo_path(self):
        return self.hub.repo(self.args["org"], self.args["name"], self.kind)

    def preupload(self):
        self.hub.resolve(self.repo_path(), self.args["rev"])
        files = self.json()["files"]
        return {"files": [{"path": f["path"], "shouldIgnore": False,
                           "uploadMode": "lfs" if f["size"] > LFS_THRESHOLD or b"\0" in base64.b64decode(f["sample"])
                           else "regular"} for f in files]}

    def lfs_batch(self):
        org, name = self.args["org"], self.args["name"]
        path = self.repo_path()
        objects = []
        for obj in self.json()["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not self.hub.lfs_object(path, obj["oid"]).is_file():  # no actions: already stored
                href = f"{self.base()}/_lfs/{self.kind}/{org}/{name}/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def lfs_put(self):
        if hashlib.sha256(self.body).hexdigest() != self.args["oid"]:
            raise HubError(400, "the uploaded bytes do not match their sha256 oid")
        target = self.hub.lfs_object(self.repo_path(), self.args["oid"])
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(self.body)
        partial.replace(target)  # never a half-written object under the real name
        return {}

    def commit(self):
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        org, name = self.args["org"], self.args["name"]
        oid = self.hub.commit(org, name, self.args["rev"], lines, self.kind)
        prefix = "" if self.kind == "models" else f"{self.kind}/"
        return {"commitUrl": f"{self.base()}/{prefix}{org}/{name}/commit/{oid}", "commitOid": oid,
                "pullRequestUrl": None}

    def create_branch(self):
        start = self.json().get("startingPoint") or "main"
        self.hub.set_ref(self.args["org"], self.args["name"], "heads", self.args["rev"], start)
        return {}

    def create_tag(self):
        self.hub.set_ref(self.args["org"], self.args["name"], "tags", self.json()["tag"], self.args["rev"])
        return {}

    # --- Spaces: their files and variables (olah mirrors model repos only here) ---

    def space_tree(self):
        path = self.hub.repo(self.args["org"], self.args["name"], "spaces")
        listing = self.hub.git(path, "ls-tree", "-r", "-l", self.hub.resolve(path, self.args["rev"]))
        entries = []
        for line in filter(None, listing.splitlines()):
            meta, file = line.split("\t", 1)
            _, _, oid, size = meta.split()
            entries.append({"type": "file", "path": file, "oid": oid, "size": int(size)})
        return entries

    def space_key(self):
        self.hub.repo(self.args["org"], self.args["name"], "spaces")  # 404 for a missing Space
        return f"{self.args['org']}/{self.args['name']}"

    def space_variables(self):
        return self.hub.variables.get(self.space_key(), {})

    def add_space_variable(self):
        payload = self.json()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", payload.get("key", "")) or "value" not in payload:
            raise HubError(400, "a variable needs a key (a name for the environment) and a value")
        variables = self.hub.variables.setdefault(self.space_key(), {})
        variables[payload["key"]] = {"value": str(payload["value"]), "description": payload.get("description"),
                                     "updatedAt": "2026-01-01T00:00:00.000Z"}
        return variables

    def delete_space_variable(self):
        variables = self.hub.variables.setdefault(self.space_key(), {})
        variables.pop(self.json().get("key"), None)
        return variables

    # --- everything else: olah -------------------------------------------------

    def forward(self, method, body):
        upstream = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        connection.request(method, self.path, body=body or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        path = urlsplit(self.path).path
        if response.status == 401 and (replacement := self.hub_explanation(path)):
            return self.error(replacement)
        if method == "GET" and response.status == 200 and data and self.corrupted(path):
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        # HEAD keeps olah's Content-Length (the file's size); other answers get the body's.
        length = response.getheader("Content-Length", "0") if method == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def mark_corrupt(self, query):
        self.hub.corrupt.add((query["repo"][0], query["file"][0]))
        return {}

    def corrupted(self, path):
        match = re.fullmatch(r"/([\w.-]+/[\w.-]+)/resolve/[^/]+/(.+)", path)
        return bool(match) and (match.group(1), unquote(match.group(2))) in self.hub.corrupt

    def hub_explanation(self, path):
        try:
            return self.hub.explain_not_found(path)
        except HubError as e:
            return e


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mirrors", required=True, help="olah's mirrors-path")
    p.add_argument("--upstream", required=True, help="olah's URL, for everything not handled here")
    args = p.parse_args()
    Handler.hub, Handler.upstream = Hub(args.mirrors), args.upstream
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
