"""The OCI distribution API over httpx: blobs (HEAD, chunked upload, resumable GET) and manifests.

Why httpx and not the `oras` package: oras-py (0.2.43) depends on `requests`, writes pulled
layers to the paths their annotations name (the path-traversal class of bug), does not verify a
pulled blob's digest, cannot resume (no `Range`), and reports no progress. The distribution API
is six endpoints; httpx is already a dependency. Every failure becomes a FoundryError here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from runtime.errors import (
    DownloadCorrupt,
    FoundryError,
    RegistryUnauthorized,
    RegistryUnavailable,
    RemoteNotFound,
)
from runtime.kill_points import kill_point
from runtime.oci.auth import RegistryAuth
from runtime.oci.reference import Reference
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.store.manifest import digest_bytes

__all__ = ["MAX_MANIFEST_BYTES", "Registry"]

log = logging.getLogger(__name__)
UPLOAD_CHUNK = 8 << 20  # one PATCH; large enough for throughput, small enough to hold in memory
DOWNLOAD_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's own limit for a manifest
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


class Registry:
    """One repository on one registry; counts the bytes it sends (`sent_bytes`)."""

    def __init__(self, ref: Reference, *, push: bool = False, timeout: float = 60.0):
        self.ref = ref
        self.sent_bytes = 0
        auth = RegistryAuth(ref.host, ref.repository, "pull,push" if push else "pull")
        self._http = httpx.Client(
            base_url=ref.base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=True,
        )
        self._push = push

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # --- blobs ---------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        response = self._call("HEAD", self._path("blobs", digest), missing_ok=True)
        return response.status_code == 200

    def mount_blob(self, digest: str, source_repository: str) -> str | None:
        """Ask the registry to link a blob it keeps for `source_repository` into this one.

        Returns None when it did (201: no byte sent), else the upload session it opened
        instead (202, the spec's answer when it cannot mount), for `upload_blob(location=)`.
        """
        response = self._call(
            "POST",
            f"/v2/{self.ref.repository}/blobs/uploads/",
            params={"mount": digest, "from": source_repository},
        )
        return None if response.status_code == 201 else self._location(response)

    def upload_blob(
        self,
        source: Path,
        digest: str,
        size: int,
        progress: ProgressFn = silent,
        *,
        location: str | None = None,
    ) -> None:
        """PATCH chunks of UPLOAD_CHUNK into a session (a new one unless `location` names one),
        then PUT ?digest= to close it."""
        if location is None:
            location = self._location(
                self._call("POST", f"/v2/{self.ref.repository}/blobs/uploads/")
            )
        offset = 0
        with source.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                }
                location = self._location(
                    self._call("PATCH", location, content=chunk, headers=headers)
                )
                offset += len(chunk)
                self.sent_bytes += len(chunk)
                progress(ProgressEvent("upload", digest[:19], offset, size, "B"))
        closing = httpx.URL(location).copy_merge_params({"digest": digest})
        self._call("PUT", str(closing), content=b"")

    def upload_bytes(self, data: bytes, digest: str, location: str | None = None) -> None:
        """A small blob (a config) in one request: PUT it with ?digest= into a session (a new
        one unless `location` names one)."""
        if location is None:
            location = self._location(
                self._call("POST", f"/v2/{self.ref.repository}/blobs/uploads/")
            )
        closing = httpx.URL(location).copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        self._call("PUT", str(closing), content=data, headers=headers)
        self.sent_bytes += len(data)

    def fetch_blob(
        self, digest: str, size: int, partial: Path, progress: ProgressFn = silent
    ) -> int:
        """GET a blob into `partial`, continuing from its current end; return the bytes resumed.

        The whole file is hashed before this returns: a blob that does not match its digest is
        deleted (never resumed) and raises DownloadCorrupt.
        """
        hasher, resumed = _hash_prefix(partial, size)
        headers = {"Range": f"bytes={resumed}-"} if resumed else {}
        if resumed < size or size == 0:
            with self._stream(self._path("blobs", digest), headers) as response:
                if resumed and response.status_code == 200:  # Range ignored: start over
                    hasher, resumed = hashlib.sha256(), 0
                mode = "ab" if resumed else "wb"
                done = resumed
                with partial.open(mode) as out:
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                        if done + len(chunk) > size:
                            break  # more bytes than the manifest promised
                        out.write(chunk)
                        kill_point("oci.blob")
                        hasher.update(chunk)
                        done += len(chunk)
                        progress(ProgressEvent("download", digest, done, size, "B"))
        got = f"sha256:{hasher.hexdigest()}"
        if got != digest or partial.stat().st_size != size:
            partial.unlink(missing_ok=True)
            raise DownloadCorrupt(
                f"blob {digest[:19]}… from {self.ref} does not match its digest (got {got[:19]}…)",
                hint="the registry holds damaged or tampered data: push the model again",
            )
        return resumed

    def get_small_blob(self, digest: str, size: int) -> bytes:
        """A config blob, read into memory and checked against its digest."""
        if size > MAX_MANIFEST_BYTES:
            raise DownloadCorrupt(f"config blob {digest[:19]}… of {self.ref} is too large")
        data = self._call("GET", self._path("blobs", digest)).content
        if len(data) != size or digest_bytes(data) != digest:
            raise DownloadCorrupt(
                f"config blob {digest[:19]}… from {self.ref} does not match its digest",
                hint="the registry holds damaged or tampered data: push the model again",
            )
        return data

    # --- manifests -----------------------------------------------------------------------
    def manifest_digest(self, reference: str) -> str | None:
        """The digest a tag points at now (HEAD), or None when the tag does not exist."""
        response = self._call(
            "HEAD",
            self._path("manifests", reference),
            missing_ok=True,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        return (
            response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None
        )

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        self._call(
            "PUT", self._path("manifests", tag), content=data, headers={"Content-Type": media_type}
        )
        self.sent_bytes += len(data)
        return digest_bytes(data)

    def get_manifest(self, reference: str) -> tuple[bytes, str]:
        """The manifest's bytes and digest; a pinned `sha256:` reference is checked."""
        response = self._call(
            "GET", self._path("manifests", reference), headers={"Accept": MANIFEST_ACCEPT}
        )
        data = response.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise DownloadCorrupt(f"the manifest of {self.ref} is larger than 4 MiB")
        digest = digest_bytes(data)
        if reference.startswith("sha256:") and digest != reference:
            raise DownloadCorrupt(f"the manifest of {self.ref} does not match {reference[:19]}…")
        return data, digest

    # --- plumbing ------------------------------------------------------------------------
    def _path(self, kind: str, reference: str) -> str:
        return f"/v2/{self.ref.repository}/{kind}/{reference}"

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryUnavailable(f"registry {self.ref.host} gave no upload location")
        return str(response.url.join(location))

    def _call(
        self, method: str, url: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._check(response, missing_ok)
        return response

    @contextmanager
    def _stream(self, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                self._check(response, False)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _check(self, response: httpx.Response, missing_ok: bool) -> None:
        status = response.status_code
        if status < 400 or (missing_ok and status == 404):
            return
        if status in (401, 403):
            verb = "push to" if self._push else "pull from"
            raise RegistryUnauthorized(
                f"registry {self.ref.host} refused to let us {verb} {self.ref.repository!r} ({status})",
                hint="log in first (docker login HOST writes ~/.docker/config.json) or set "
                "FOUNDRY_REGISTRY_USERNAME and FOUNDRY_REGISTRY_PASSWORD",
            )
        if status == 404:
            raise RemoteNotFound(
                f"{self.ref} does not exist in the registry",
                hint="check the repository and tag (a pushed model's tag is printed by `foundry cache push`)",
            )
        raise _server_error(self.ref, response)

    def _unreachable(self, exc: Exception) -> FoundryError:
        return RegistryUnavailable(
            f"cannot reach the registry at {self.ref.host}: {exc or type(exc).__name__}",
            hint="check the address and that the registry is running; run again to resume",
        )


def _server_error(ref: Reference, response: httpx.Response) -> FoundryError:
    try:
        response.read()
        detail = response.text[:200].strip()
    except httpx.HTTPError:
        detail = ""
    return RegistryUnavailable(
        f"registry {ref.host} answered {response.status_code} for {response.request.method} "
        f"{response.url.path}: {detail or response.reason_phrase}",
        hint="run the same command again (transfers resume)",
    )


def _hash_prefix(partial: Path, size: int) -> tuple[Any, int]:
    """A sha256 over what an earlier, interrupted fetch left, and its length (0: start over)."""
    hasher = hashlib.sha256()
    if not partial.exists() or partial.stat().st_size > size:
        partial.unlink(missing_ok=True)
        return hasher, 0
    with partial.open("rb") as handle:
        while chunk := handle.read(DOWNLOAD_CHUNK):
            hasher.update(chunk)
    return hasher, partial.stat().st_size
