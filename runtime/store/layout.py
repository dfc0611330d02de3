"""Paths of the content-addressed store; the only module that knows them.

    $FOUNDRY_HOME/cache/
      blobs/sha256/<hh>/<hex>          immutable file contents, one copy however many models share them
      manifests/sha256/<hex>.json      a model variant: file path -> blob digest, size, metadata
      refs/<model-id>                  model id -> manifest digest (':' written as '@')
      builds/<build-key-hex>           build key -> manifest digest (the compiler's action cache)
      snapshots/<manifest-hex>/        the folder an engine loads: hard links (or copies) of blobs
      locks/<name>.lock                one lock per key; they only save duplicate work
      tmp/                             staging; anything here is garbage after a crash
        <hex>.partial                  a blob being pulled from a registry, resumed from its end
      registries/<host>.json           blob digest -> repositories of that registry known to hold it

Helpers build paths only from validated names and digests and never create directories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runtime.names import digest_hex, model_id_filename

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests" / "sha256"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def blob(self, digest: str) -> Path:
        hex_ = digest_hex(digest)
        return self.blobs / hex_[:2] / hex_

    def manifest(self, digest: str) -> Path:
        return self.manifests / f"{digest_hex(digest)}.json"

    def ref(self, model_id: str) -> Path:
        return self.refs / model_id_filename(model_id)

    def build(self, build_key: str) -> Path:
        return self.builds / digest_hex(build_key)

    def snapshot(self, manifest_digest: str) -> Path:
        return self.snapshots / digest_hex(manifest_digest)

    def partial(self, digest: str) -> Path:
        """Where a blob being received waits to be resumed (swept only after an hour untouched)."""
        return self.tmp / f"{digest_hex(digest)}.partial"

    def lock(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def registry_blobs(self, host: str) -> Path:
        """Where blobs seen in a registry's repositories are noted (cross-repository mounts)."""
        return self.root / "registries" / f"{re.sub(r'[^A-Za-z0-9.-]', '_', host)}.json"

    def all_dirs(self) -> list[Path]:
        return [
            self.blobs,
            self.manifests,
            self.refs,
            self.builds,
            self.snapshots,
            self.locks,
            self.tmp,
        ]
