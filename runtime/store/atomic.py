"""The one write pattern of the store: write under tmp/, hash while copying, fsync, rename.

A crash (or kill -9) at any point leaves at most a `*.tmp` file under `tmp/`, which the
next `Store()` sweeps; nothing half-written ever appears under a real name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CHUNK", "StagedFile", "atomic_write", "hash_file", "staged_file"]

CHUNK = 1 << 20


class StagedFile:
    """A file being written under tmp/, hashed as it is written; `commit` renames it."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = path.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.handle.write(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"

    def commit(self, target: Path) -> None:
        """fsync, then atomically rename onto `target` (its parent is created)."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path.replace(target)


@contextmanager
def staged_file(tmp_dir: Path, name: str) -> Iterator[StagedFile]:
    """Yield a StagedFile under `tmp_dir`; whatever is not committed is deleted on exit."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    staged = StagedFile(tmp_dir / f"{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield staged
    finally:
        staged.handle.close()
        staged.path.unlink(missing_ok=True)


def atomic_write(target: Path, data: bytes, tmp_dir: Path) -> str:
    """Write `data` to `target` atomically; return its digest."""
    with staged_file(tmp_dir, target.name) as staged:
        staged.write(data)
        staged.commit(target)
        return staged.digest


def hash_file(path: Path) -> tuple[str, int]:
    """`("sha256:<hex>", size)` of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size
