"""Which repositories of a registry hold a blob, as far as this machine has seen (docker's blob-info cache).

A registry links a blob to each repository separately, so pushing a model to `team/release`
that was pushed to (or pulled from) `team/cache` would upload every byte again. Asking the
registry to *mount* the blob from the other repository (`POST …/blobs/uploads/?mount=&from=`)
links it without sending it; this file is how a push knows which repository to name.

It is a hint, never trusted: a wrong or stale entry costs one refused mount, after which the
blob is uploaded as usual. Writes are atomic; two processes racing may lose one's note.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from runtime.oci.reference import is_repository
from runtime.store.atomic import atomic_write

if TYPE_CHECKING:
    from runtime.store import Store

__all__ = ["BlobLocations"]

log = logging.getLogger(__name__)

MAX_REPOSITORIES = 4  # per blob: the most recent ones are enough to find a mount source
MAX_BLOBS = 50_000  # bounds the file (~5 MB); the oldest notes go first


class BlobLocations:
    """`digest -> [repository, …]` for one registry host, newest last."""

    def __init__(self, store: Store, host: str):
        self._store = store
        self._path = store.layout.registry_blobs(host)
        self._seen: dict[str, list[str]] = self._read()

    def sources(self, digest: str, *, besides: str) -> list[str]:
        """Repositories other than `besides` that held `digest` when last seen, newest first."""
        return [repo for repo in reversed(self._seen.get(digest, [])) if repo != besides]

    def note(self, repository: str, digests: Iterable[str]) -> None:
        """Remember that `repository` holds every one of `digests` now."""
        for digest in digests:
            repos = [r for r in self._seen.pop(digest, []) if r != repository] + [repository]
            self._seen[digest] = repos[-MAX_REPOSITORIES:]
        while len(self._seen) > MAX_BLOBS:
            del self._seen[next(iter(self._seen))]
        data = json.dumps(self._seen, separators=(",", ":")).encode()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self._path, data, self._store.layout.tmp)
        except OSError as exc:  # a hint lost costs a later upload, never this transfer
            log.warning("could not note where blobs live in %s: %s", self._path, exc)

    def _read(self) -> dict[str, list[str]]:
        try:
            raw = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {
            str(digest): [r for r in repos if isinstance(r, str) and is_repository(r)]
            for digest, repos in raw.items()
            if isinstance(repos, list)
        }
