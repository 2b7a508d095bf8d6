"""A tiny local stand-in for the Hugging Face Hub's HTTP API, for huggingface_hub's real code paths.

Serves model info (``/api/models/<repo>[/revision/<rev>]``) and file downloads
(``/<repo>/resolve/<rev>/<file>``, HEAD and GET) with the headers huggingface_hub reads, gated
repositories with the Hub's ``X-Error-Code: GatedRepo`` answers, and a download that stalls
half-way (to test interrupted runs). Only loopback; started and stopped by the tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LLAMA_TOKENIZER = {
    "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}),
    "tokenizer_config.json": json.dumps({"model_max_length": 131072}),
    "special_tokens_map.json": json.dumps({"bos_token": "<|begin_of_text|>"}),
    "config.json": json.dumps({"model_type": "llama"}),
    "model.safetensors": "weights that staging must not download",
}


@dataclass
class Repo:
    files: dict[str, str]
    gated: bool = False
    sha: str = ""

    def __post_init__(self) -> None:
        if not self.sha:
            blob = json.dumps(self.files, sort_keys=True).encode()
            self.sha = hashlib.sha1(blob).hexdigest()


@dataclass
class FakeHub:
    """``with FakeHub({...}) as hub:`` serves at ``hub.url`` (use it as HF_ENDPOINT)."""

    repos: dict[str, Repo]
    tokens: set[str] = field(default_factory=lambda: {"hf_good"})
    stall: str | None = None
    """A file name whose GET sends half its body and then waits until ``release()``."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        self._release.set()

    def downloads(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    # -- serving -------------------------------------------------------------------------------
    def _serve(self, req: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = req.path.split("?", 1)[0]
        self.requests.append((req.command, path))
        auth = req.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or None
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._info(req, m.group(1))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
            return self._tree(req, m.group(1))
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._file(req, m.group(1), m.group(2), m.group(3), token, body)
        self._error(req, 404, "RepoNotFound", "not found")

    def _info(self, req, repo_id: str) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(req, 401, "RepoNotFound", "Repository not found")
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        self._send(req, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _tree(self, req, repo_id: str) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(req, 401, "RepoNotFound", "Repository not found")
        entries = [
            {
                "type": "file",
                "path": name,
                "size": len(data.encode()),
                "oid": hashlib.sha1(data.encode()).hexdigest(),
            }
            for name, data in sorted(repo.files.items())
        ]
        self._send(req, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _file(self, req, repo_id, revision, name, token, body) -> None:
        repo = self.repos.get(repo_id)
        if repo is None or revision not in (repo.sha, "main"):
            return self._error(req, 404, "RepoNotFound", "Repository not found")
        if repo.gated and token not in self.tokens:
            status = 401 if token is None else 403
            message = (
                f"Access to model {repo_id} is restricted and you are not in the authorized list."
            )
            return self._error(req, status, "GatedRepo", message)
        if name not in repo.files:
            return self._error(req, 404, "EntryNotFound", f"{name} does not exist")
        data = repo.files[name].encode()
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        if body and name == self.stall:
            req.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                req.send_header(key, value)
            req.end_headers()
            req.wfile.write(data[: len(data) // 2])
            req.wfile.flush()
            self.stalled.set()
            self._release.wait(timeout=120)
            return
        self._send(req, 200, data if body else b"", headers, length=len(data))

    def _error(self, req, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        self._send(req, status, body, {**headers, "Content-Type": "application/json"})

    @staticmethod
    def _send(req, status: int, data: bytes, headers: dict, length: int | None = None) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(data) if length is None else length))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)
