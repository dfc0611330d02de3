"""verify and gc: plan first, then execute, so `--dry-run` prints exactly what would happen."""

from __future__ import annotations

import shutil
from contextlib import suppress
from typing import TYPE_CHECKING

from runtime.names import parse_digest
from runtime.store.atomic import hash_file

if TYPE_CHECKING:
    from runtime.store import Store

__all__ = ["gc", "verify"]


def verify(store: Store) -> list[str]:
    """Re-hash every blob each ref reaches; name the damaged models."""
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
    return problems


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
            shutil.rmtree(path, ignore_errors=True)
        for path in doomed_manifests + doomed_blobs:
            path.unlink(missing_ok=True)
    return {
        "snapshots": len(doomed_snapshots),
        "manifests": len(doomed_manifests),
        "blobs": len(doomed_blobs),
        "bytes": freed,
    }
