"""A fake Hugging Face Hub on loopback: the few endpoints ``huggingface_hub`` calls to read a
repo's metadata, its files and a range of a file (a safetensors header), served from memory.

Tests never reach the real Hub: they point ``HF_ENDPOINT`` (the service's ``hub_endpoint``) at
this server. Errors are answered as the Hub answers them (``X-Error-Code: RepoNotFound`` with 401,
``GatedRepo`` with 401 without a token and 403 with one, ``RevisionNotFound`` and
``EntryNotFound`` with 404), which ``huggingface_hub.utils.hf_raise_for_status`` turns into its
typed errors. A repo's ``delay_s`` makes every answer about it that late (a slow hub).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def safetensors_header(tensors: Mapping[str, tuple[str, tuple[int, ...]]],
                       metadata: Mapping[str, str] | None = None) -> bytes:
    """The first bytes of a safetensors file holding ``tensors`` (name -> (dtype, shape)): its
    8-byte little-endian header length and JSON header with each tensor's data offsets, as the
    safetensors format lays them out. The data itself is left out: readers of the header (the
    Hub's range request) never reach it."""
    widths = {"F64": 8, "F32": 4, "I64": 8, "I32": 4, "BF16": 2, "F16": 2, "U8": 1, "I8": 1,
              "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        end = offset + widths[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


@dataclass
class FakeRepo:
    """One model repo: its files (name -> bytes) at one commit."""

    files: dict[str, bytes]
    sha: str = ""
    gated: bool = False
    delay_s: float = 0.0
    pipeline_tag: str | None = "text-generation"
    downloads: int = 0
    requests: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + self.files[name])
            self.sha = digest.hexdigest()


def json_file(value: Any) -> bytes:
    return json.dumps(value).encode()


class FakeHub:
    """The server: ``repos`` by id, ``url`` once started; ``token`` is the one access token that
    opens gated repos."""

    def __init__(self, repos: dict[str, FakeRepo] | None = None, token: str = "hf_fake_token"):
        self.repos: dict[str, FakeRepo] = dict(repos or {})
        self.token = token
        self.log: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        # open connections: clients keep them alive, and a stopped hub must not go on answering them
        self.connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.connections.clear()

    @contextmanager
    def running(self) -> Iterator[FakeHub]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.fake.connections.add(self.connection)

    def finish(self) -> None:
        self.fake.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._answer(head=False)

    # ---- routing -------------------------------------------------------------------------
    def _answer(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.fake.log.append((self.command, self.path))
        if path == "/api/models":
            return self._search(parse_qs(parts.query))
        if path.startswith("/api/models/"):
            return self._info(path.removeprefix("/api/models/"))
        segments = path.strip("/").split("/")
        if len(segments) >= 5 and segments[2] == "resolve":
            repo_id, revision, filename = "/".join(segments[:2]), segments[3], "/".join(segments[4:])
            return self._file(repo_id, revision, filename, head)
        return self._error(404, "RepoNotFound", "Repository not found")

    def _repo(self, repo_id: str, revision: str, needs_access: bool) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository Not Found")  # the Hub hides what you cannot see
            return None
        repo.requests += 1
        time.sleep(repo.delay_s)
        if revision not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        if needs_access and repo.gated:
            authorization = self.headers.get("authorization", "")
            if authorization != f"Bearer {self.fake.token}":
                status = 403 if authorization else 401
                self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to "
                                                 "it and be authenticated to access it.")
                return None
        return repo

    def _info(self, rest: str) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo = self._repo(repo_id, unquote(revision) or "main", needs_access=False)
        if repo is None:
            return
        self._json({"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                    "gated": "manual" if repo.gated else False, "pipeline_tag": repo.pipeline_tag,
                    "downloads": repo.downloads, "tags": [],
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]})

    def _search(self, query: dict[str, list[str]]) -> None:
        text = query.get("search", [""])[0].lower()
        limit = int(query.get("limit", ["10"])[0])
        found = [(r.downloads, repo_id) for repo_id, r in self.fake.repos.items() if text in repo_id.lower()]
        self._json([{"id": repo_id, "modelId": repo_id, "downloads": d}
                    for d, repo_id in sorted(found, reverse=True)[:limit]])

    def _file(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self._repo(repo_id, revision, needs_access=True)
        if repo is None:
            return
        content = repo.files.get(filename)
        if content is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}")
        status, body = 200, content
        wanted = self.headers.get("range")
        if wanted and wanted.startswith("bytes="):
            start, _, end = wanted.removeprefix("bytes=").partition("-")
            body = content[int(start): int(end) + 1 if end else None]
            status = 206
        etag = hashlib.sha256(content).hexdigest()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # ---- answers -------------------------------------------------------------------------
    def _json(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
