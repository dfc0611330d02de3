"""Register an artifact that came from outside (a registry pull, a bundle) once its blobs are in.

The same bar as `foundry cache import FOLDER`: the files, linked into a staging folder, must load
in the runtime's engine (a chat model also generates a few tokens) before anything is named.
Then the manifest is written as it came (its digest is the builder's), then the ref and the
build key: the store's own order, so a failure at any point registers nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from runtime.artifact import validate_artifact
from runtime.errors import CorruptBlob
from runtime.progress import ProgressEvent, ProgressFn, silent

if TYPE_CHECKING:
    from runtime.oci.format import Artifact
    from runtime.store import CachedModel, Store

__all__ = ["receive", "register_received", "validate_received"]


def receive(
    store: Store,
    artifact: Artifact,
    *,
    model_id: str | None = None,
    progress: ProgressFn = silent,
) -> tuple[CachedModel, dict[str, Any]]:
    """Validate then register `artifact` (all its blobs already in `store`); return it and the
    validation figures. Raises ValidationFailed (nothing registered) when it does not load here."""
    validation = validate_received(store, artifact, progress)
    return register_received(store, artifact, model_id=model_id, progress=progress), validation


def validate_received(
    store: Store, artifact: Artifact, progress: ProgressFn = silent
) -> dict[str, Any]:
    """Load the artifact's files (linked into a staging folder) as `cache import` would."""
    from runtime.hardware import detect

    manifest = artifact.manifest
    provider = str(manifest.metadata.get("provider") or "cpu")
    if not detect().has_provider(provider):
        return {"skipped": f"the {provider} execution provider is not available here"}
    progress(ProgressEvent("validate", f"loading {manifest.model_id} in the runtime's engine"))
    with store.staging("receive") as staging:
        for rel, entry in manifest.files.items():
            blob = store.blob_path(entry.digest)
            if not blob.is_file():
                raise CorruptBlob(f"blob {entry.digest} of {rel!r} is missing")
            dest = staging.path / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob, dest)
            except OSError:
                shutil.copyfile(blob, dest)
        task = manifest.metadata.get("task")
        return validate_artifact(staging.path, str(task) if task else None, generate_tokens=4)


def register_received(
    store: Store,
    artifact: Artifact,
    *,
    model_id: str | None = None,
    progress: ProgressFn = silent,
) -> CachedModel:
    """Manifest as it came, then the ref and the build key (when annotation and manifest agree)."""
    manifest = artifact.manifest
    key = artifact.build_key
    if key is not None and manifest.metadata.get("build_key") not in (None, key):
        key = None  # the annotation and the manifest disagree: do not vouch for either
    cached = store.register_manifest(manifest, model_id=model_id, build_key=key)
    progress(ProgressEvent("register", cached.model_id, done=True))
    return cached
