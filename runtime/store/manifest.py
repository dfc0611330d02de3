"""A manifest: one model variant as file path -> blob digest, plus its metadata.

Encoded canonically (sorted keys) so that the same files and metadata always give the
same manifest digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

__all__ = ["FileEntry", "Manifest", "encode_canonical"]


class FileEntry(msgspec.Struct, frozen=True):
    digest: str
    size: int


class Manifest(msgspec.Struct, frozen=True):
    """`metadata` carries what the runtime needs to serve the model without reading files:
    task (chat|embeddings|speech), family, target, precision, provider, synthetic, source, ..."""

    schema: int
    model_id: str
    files: dict[str, FileEntry]
    metadata: dict[str, Any] = {}
    created: str = ""

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files.values())


def encode_canonical(value: Any) -> bytes:
    """JSON with sorted keys: equal content, equal bytes, equal digest."""
    return msgspec.json.encode(msgspec.to_builtins(value), order="sorted")


def digest_bytes(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"
