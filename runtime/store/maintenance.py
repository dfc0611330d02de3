"""verify and gc: plan first, then execute, so `--dry-run` prints exactly what would happen."""

from __future__ import annotations

import shutil
import uuid
from contextlib import suppress
from typing import TYPE_CHECKING

from runtime.kill_points import kill_point
from runtime.names import parse_digest
from runtime.store.atomic import hash_file

if TYPE_CHECKING:
    from pathlib import Path

    from runtime.store import CachedModel, Store

__all__ = ["gc", "verify"]


def verify(store: Store) -> list[str]:
    """Re-hash every blob each ref reaches, and check its snapshot (if built) is whole."""
    problems: list[str] = []
    for model in store.list_models():
        for rel, entry in model.manifest.files.items():
            blob = store.layout.blob(entry.digest)
            if not blob.exists():
                problems.append(f"{model.model_id}: {rel} is missing (blob {entry.digest})")
                continue
            digest, size = hash_file(blob)
            if digest != entry.digest or size != entry.size:
                problems.append(
                    f"{model.model_id}: {rel} is damaged (expected {entry.digest}, got {digest})"
                )
            elif not _snapshot_file_whole(model, rel, entry.size):
                problems.append(f"{model.model_id}: snapshot file {rel} is missing or truncated")
    return problems


def _snapshot_file_whole(model: CachedModel, rel: str, size: int) -> bool:
    """A snapshot folder is served as is once it exists (built on first load), so a missing or
    short file in it is damage `verify` must name even when every blob is whole."""
    if not model.path.is_dir():
        return True
    linked = model.path / rel
    return linked.is_file() and linked.stat().st_size == size


def _reachable(store: Store) -> tuple[set[str], set[str]]:
    manifests: set[str] = set()
    for folder in (store.layout.refs, store.layout.builds):
        for entry in folder.iterdir():
            with suppress(Exception):
                manifests.add(parse_digest(entry.read_text().strip()))
    blobs: set[str] = set()
    for digest in list(manifests):
        try:
            blobs.update(e.digest for e in store.read_manifest(digest).files.values())
        except Exception:
            manifests.discard(digest)
    return manifests, blobs


def _remove_snapshot(store: Store, path: Path) -> None:
    """Rename the folder out of snapshots/ first, then delete it: a gc killed halfway through
    an rmtree used to leave a half snapshot under its real name, which `snapshot()` then served
    as whole to the next model that registered the same manifest."""
    doomed = store.layout.tmp / f"gc-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        path.replace(doomed)
    except FileNotFoundError:
        return
    kill_point("store.gc.snapshot")
    shutil.rmtree(doomed, ignore_errors=True)


def gc(store: Store, *, dry_run: bool = False) -> dict[str, int]:
    """Delete manifests, snapshots and blobs that no ref or build key reaches."""
    manifests, blobs = _reachable(store)
    doomed_snapshots = [
        p for p in store.layout.snapshots.iterdir() if f"sha256:{p.name}" not in manifests
    ]
    doomed_manifests = [
        p for p in store.layout.manifests.glob("*.json") if f"sha256:{p.stem}" not in manifests
    ]
    doomed_blobs = [p for p in store.layout.blobs.glob("*/*") if f"sha256:{p.name}" not in blobs]
    freed = sum(p.stat().st_size for p in doomed_blobs)
    if not dry_run:
        for path in doomed_snapshots:
            _remove_snapshot(store, path)
            kill_point("store.gc")
        for path in doomed_manifests + doomed_blobs:
            path.unlink(missing_ok=True)
            kill_point("store.gc")
    return {
        "snapshots": len(doomed_snapshots),
        "manifests": len(doomed_manifests),
        "blobs": len(doomed_blobs),
        "bytes": freed,
    }
