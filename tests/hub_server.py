"""A local HTTP server that speaks enough of the Hugging Face hub protocol for the real client.

Routes (what `huggingface_hub` 2.x calls; see its `hf_api.model_info` and `file_download`):

    GET  /api/models/{org}/{name}[/revision/{rev}][?blobs=true]   {"id", "sha", "siblings": [...]}
    GET  /api/models/{org}/{name}/tree/{rev}[/{path}][?recursive=true]  [{"type", "path", "size", "oid", "lfs"}]
    HEAD /{org}/{name}/resolve/{rev}/{path}     ETag, X-Repo-Commit, Content-Length (+ X-Linked-* for LFS)
    GET  /{org}/{name}/resolve/{rev}/{path}     the bytes; `Range: bytes=N-` -> 206 + Content-Range

LFS-style files (*.onnx, *.data, *.safetensors, or larger than 64 KB) carry their sha256 as
ETag and `lfs` info in the listing; other files carry their git blob sha1, as on the hub.
Unknown repos, revisions and files get 404 with the hub's `X-Error-Code` header.

Test switches (set on the `HubServer` object, each consumed by the next matching GET):
    drop_after[path] = n    send n bytes of the body, then close the connection (once)
    stall_after[path] = n   send n bytes, then hang until `release()` (for kill -9 tests)
    corrupt.add(path)       serve the file with its bytes altered (headers still name the real hash)
Every request is logged in `requests` as (method, url path, Range header or None).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["HubServer", "RemoteRepo"]

LFS_SUFFIXES = (".onnx", ".data", ".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) > 64 * 1024


@dataclass
class RemoteRepo:
    repo_id: str
    files: dict[str, bytes]
    sha: str = ""

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for path in sorted(self.files):
                digest.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
            self.sha = digest.hexdigest()

    @classmethod
    def from_folder(cls, repo_id: str, folder: Path, prefix: str = "") -> RemoteRepo:
        files = {
            (f"{prefix}/" if prefix else "") + p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        return cls(repo_id, files)

    def sibling(self, path: str) -> dict[str, object]:
        data = self.files[path]
        entry: dict[str, object] = {
            "rfilename": path,
            "size": len(data),
            "blobId": git_blob_sha1(data),
        }
        if is_lfs(path, data):
            entry["lfs"] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": 134,
            }
        return entry

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if is_lfs(path, data) else git_blob_sha1(data)


@dataclass
class HubServer:
    """Start with `with HubServer() as hub:`; `hub.endpoint` is what HF_ENDPOINT should be."""

    repos: dict[str, RemoteRepo] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------
    def add(self, repo: RemoteRepo) -> RemoteRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        """Let stalled responses finish (they then close without the rest of the body)."""
        self._release.set()

    def gets(self, suffix: str) -> list[str | None]:
        """The Range headers of every GET of a file whose path ends with `suffix`."""
        return [
            rng for method, path, rng in self.requests if method == "GET" and path.endswith(suffix)
        ]

    def take(self, table: dict[str, int], path: str) -> int | None:
        with self._lock:
            return table.pop(path, None)

    def lookup(self, repo_id: str, revision: str) -> RemoteRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None or revision not in ("main", repo.sha):
            return None
        return repo


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # --- routing -----------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        self.hub.requests.append(("HEAD" if head else "GET", path, self.headers.get("Range")))
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :]
            parts = rest.split("/")
            if len(parts) >= 4 and parts[2] == "tree":
                self._tree(
                    f"{parts[0]}/{parts[1]}",
                    parts[3],
                    "/".join(parts[4:]),
                    "recursive=true" in url.query.lower(),
                )
            else:
                self._model_info(rest)
            return
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            return
        self._error(404, "RepoNotFound", "no such route")

    def _model_info(self, rest: str) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        revision = revision or "main"
        if repo_id not in self.hub.repos:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        repo = self.hub.lookup(repo_id, revision)
        if repo is None:
            self._error(404, "RevisionNotFound", f"Revision {revision} not found")
            return
        body = json.dumps(
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.sha,
                "private": False,
                "siblings": [repo.sibling(p) for p in sorted(repo.files)],
            }
        ).encode()
        self._send(200, {"Content-Type": "application/json"}, body)

    def _tree(self, repo_id: str, revision: str, folder: str, recursive: bool) -> None:
        """`list_repo_tree` (what `snapshot_download` uses): files, and folders when not recursive."""
        repo = self.hub.lookup(repo_id, revision)
        if repo is None:
            self._error(
                404,
                "RepoNotFound" if repo_id not in self.hub.repos else "RevisionNotFound",
                "not found",
            )
            return
        prefix = f"{folder.strip('/')}/" if folder else ""
        entries: list[dict[str, object]] = []
        folders: set[str] = set()
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if not recursive and "/" in rest:
                folders.add(prefix + rest.split("/")[0])
                continue
            sibling = repo.sibling(path)
            entry: dict[str, object] = {
                "type": "file",
                "path": path,
                "size": sibling["size"],
                "oid": sibling["blobId"],
            }
            if "lfs" in sibling:
                lfs = sibling["lfs"]
                assert isinstance(lfs, dict)
                entry["lfs"] = {
                    "oid": lfs["sha256"],
                    "size": lfs["size"],
                    "pointerSize": lfs["pointerSize"],
                }
            entries.append(entry)
        entries += [
            {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()}
            for f in sorted(folders)
        ]
        self._send(200, {"Content-Type": "application/json"}, json.dumps(entries).encode())

    def _resolve(self, repo_id: str, revision: str, file: str, head: bool) -> None:
        repo = self.hub.lookup(repo_id, revision)
        if repo is None:
            self._error(
                404,
                "RepoNotFound" if repo_id not in self.hub.repos else "RevisionNotFound",
                "not found",
            )
            return
        if file not in repo.files:
            self._error(404, "EntryNotFound", f"{file} not found")
            return
        data = repo.files[file]
        etag = repo.etag(file)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": repo.sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if is_lfs(file, data):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        if head:
            self._send(200, {**headers, "Content-Length": str(len(data))}, b"", head=True)
            return
        if file in self.hub.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = _range_start(self.headers.get("Range"))
        status = 200
        if start:
            if start >= len(data):
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send_body(status, headers, data[start:], file)

    # --- writing -----------------------------------------------------------------
    def _send_body(self, status: int, headers: dict[str, str], body: bytes, file: str) -> None:
        drop = self.hub.take(self.hub.drop_after, file)
        stall = self.hub.take(self.hub.stall_after, file)
        cut = drop if drop is not None else stall
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        if stall is not None:
            self.hub._release.wait(timeout=60)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool = False) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(
            status,
            {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
            body,
        )


def _range_start(value: str | None) -> int:
    """`bytes=N-` -> N (the only form the hub client sends); anything else -> 0."""
    if not value or not value.startswith("bytes="):
        return 0
    first = value[len("bytes=") :].split(",")[0]
    start, _, _ = first.partition("-")
    return int(start) if start.isdigit() else 0
