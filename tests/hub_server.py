"""A Hub-protocol HTTP server on 127.0.0.1 for tests: it stands in for huggingface.co, which these machines cannot
reach. It speaks just enough of the protocol for the real ``huggingface_hub`` client (``create_repo``,
``upload_folder`` with regular (base64) uploads, ``hf_hub_download``, model info / tree / paths-info), and so for
timm's and transformers' Hub loading on top of it. LFS / Xet uploads are not implemented. Requests are logged in
``requests`` so tests can check, e.g., that no token is ever sent in a body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[str]] = {}
        self.private: dict[str, bool] = {}  # visibility, set when a repo is created (as the Hub: never changed after)
        self.requests: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.lock = threading.Lock()

    def head(self, repo: str) -> str:
        return self.commits[repo][-1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    """The routes of the Hub protocol the client uses, on the repos of ``state`` (set by ``make_handler``)."""

    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -------------------------------------------------------------------------------------------- helpers
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _not_found(self, what: str, code: str = "RepoNotFound") -> None:
        self._send(404, {"error": what}, {"X-Error-Code": code, "X-Error-Message": what})

    def _log(self, body: bytes) -> None:
        with self.state.lock:
            self.state.requests.append((self.command, self.path, body, dict(self.headers)))

    # -------------------------------------------------------------------------------------------- routes
    def do_GET(self) -> None:
        self._log(b"")
        self._route(b"")

    def do_HEAD(self) -> None:
        self._log(b"")
        self._route(b"")

    def do_POST(self) -> None:
        body = self._body()
        self._log(body)
        self._route(body)

    ROUTES = (
        (r"/api/models/([^/]+/[^/]+)/preupload/(.+)", "_preupload"),
        (r"/api/models/([^/]+/[^/]+)/commit/(.+)", "_commit"),
        (r"/api/models/([^/]+/[^/]+)/paths-info/(.+)", "_paths_info"),
        (r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", "_tree"),
        (r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", "_info"),
        (r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", "_resolve"),
    )

    def _route(self, body: bytes) -> None:
        path = unquote(urlparse(self.path).path)
        if path == "/api/whoami-v2":
            return self._send(200, {"type": "user", "name": "tester", "orgs": [], "auth": {}})
        if path == "/api/repos/create" and self.command == "POST":
            return self._create(body)
        if path == "/api/validate-yaml":
            return self._send(200, {})
        for pattern, name in self.ROUTES:
            m = re.fullmatch(pattern, path)
            if m:
                return getattr(self, name)(m, body)
        self._not_found(f"unknown route {self.command} {path}", "EntryNotFound")

    def _create(self, body: bytes) -> None:
        req = json.loads(body or b"{}")
        repo = f"{req.get('organization') or 'tester'}/{req['name']}" if "/" not in req["name"] else req["name"]
        with self.state.lock:
            if repo not in self.state.repos:
                self.state.repos[repo] = {}
                self.state.commits[repo] = [_sha(repo.encode())[:40]]
                self.state.private[repo] = req.get("private") is True or req.get("visibility") == "private"
        return self._send(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})

    def _preupload(self, m: re.Match, body: bytes) -> None:
        files = json.loads(body)["files"]
        return self._send(
            200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        )

    def _commit(self, m: re.Match, body: bytes) -> None:
        repo = m.group(1)
        if repo not in self.state.repos:
            return self._not_found(f"repo {repo} not found")
        files = {}
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] in ("lfsFile", "deletedFile", "deletedFolder"):
                return self._send(400, {"error": f"{item['key']} is not supported by the test server"})
        with self.state.lock:
            self.state.repos[repo].update(files)
            oid = _sha(body + str(len(self.state.commits[repo])).encode())[:40]
            self.state.commits[repo].append(oid)
        host = self.headers["Host"]
        return self._send(200, {"commitUrl": f"http://{host}/{repo}/commit/{oid}", "commitOid": oid})

    def _entries(self, repo: str, paths: list[str] | None = None) -> list[dict[str, Any]]:
        files = self.state.repos[repo]
        return [
            {"type": "file", "path": p, "size": len(d), "oid": _sha(d)[:40]}
            for p, d in sorted(files.items())
            if paths is None or p in paths
        ]

    def _paths_info(self, m: re.Match, body: bytes) -> None:
        repo = m.group(1)
        if repo not in self.state.repos:
            return self._not_found(f"repo {repo} not found")
        text = body.decode()
        try:
            paths = json.loads(text)["paths"]
        except (json.JSONDecodeError, KeyError):
            from urllib.parse import parse_qs

            paths = parse_qs(text).get("paths", [])
        return self._send(200, self._entries(repo, list(paths)))

    def _tree(self, m: re.Match, body: bytes) -> None:
        repo = m.group(1)
        if repo not in self.state.repos:
            return self._not_found(f"repo {repo} not found")
        return self._send(200, self._entries(repo))

    def _info(self, m: re.Match, body: bytes) -> None:
        repo = m.group(1)
        if repo not in self.state.repos:
            return self._not_found(f"repo {repo} not found")
        siblings = [{"rfilename": p} for p in sorted(self.state.repos[repo])]
        return self._send(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": self.state.head(repo),
                "siblings": siblings,
                "private": self.state.private.get(repo, False),
                "tags": [],
                "downloads": 0,
                "likes": 0,
            },
        )

    def _resolve(self, m: re.Match, body: bytes) -> None:
        repo, filename = m.group(1), m.group(3)
        if repo not in self.state.repos:
            return self._not_found(f"repo {repo} not found")
        data = self.state.repos[repo].get(filename)
        if data is None:
            return self._not_found(f"{filename} not in {repo}", "EntryNotFound")
        etag = f'"{_sha(data)}"'
        headers = {"X-Repo-Commit": self.state.head(repo), "ETag": etag, "X-Linked-Size": str(len(data))}
        return self._send(200, headers=headers, raw=data)


def make_handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    """A ``HubHandler`` class serving ``state``."""
    return type("Handler", (HubHandler,), {"state": state})


class HubServer:
    """``with HubServer() as hub: hub.url``: a threaded server on a free 127.0.0.1 port, stopped on exit."""

    def __init__(self) -> None:
        self.state = HubState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
