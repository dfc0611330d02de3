"""`foundry cache push|pull oci://…`: a cached model to a registry and back, Ollama's Push/PullModel.

Push: HEAD every blob first and upload only what the registry lacks (a second push sends no
blob bytes; a blob it holds in another repository we saw it in is mounted, not sent), then
the config, then the manifest under the tag and under `bk-<build key>` (the action-cache tag
`foundry-build --remote` looks up). Pull: manifest, config, then each blob the
store lacks into `tmp/<hex>.partial`, resumed from its end after an interruption and hashed
before it is committed; then `receive` validates and registers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.errors import (
    CatalogError,
    CorruptBlob,
    InvalidReference,
    RegistryUnauthorized,
    RemoteNotFound,
)
from runtime.oci.format import MANIFEST_MEDIA_TYPE, decode_oci_manifest, read_artifact, to_artifact
from runtime.oci.locations import BlobLocations
from runtime.oci.receive import receive
from runtime.oci.reference import DEFAULT_TAG, Reference, build_key_tag
from runtime.oci.registry import Registry
from runtime.progress import ProgressEvent, ProgressFn, silent

if TYPE_CHECKING:
    from runtime.store import CachedModel, Store
    from runtime.store.manifest import Manifest

__all__ = ["PullResult", "PushResult", "lookup_build", "pull", "push"]


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str  # the OCI manifest's
    tags: list[str]
    uploaded_blobs: int
    mounted_blobs: int  # linked from another repository of the registry: no byte sent
    present_blobs: int
    sent_bytes: int  # every byte of blob, config and manifest bodies we sent
    total_bytes: int


@dataclass(frozen=True)
class PullResult:
    model: CachedModel
    reference: str
    digest: str
    fetched_blobs: int
    cached_blobs: int
    fetched_bytes: int
    resumed_bytes: int
    validation: dict[str, Any]


def push(store: Store, model_id: str, ref: Reference, progress: ProgressFn = silent) -> PushResult:
    """Publish a cached model as one OCI manifest; blobs the registry has are never sent again."""
    if ref.digest:
        raise InvalidReference(
            f"cannot push to a digest ({ref}): a push names a tag",
            hint=f"foundry cache push {model_id} oci://{ref.host}/{ref.repository}:TAG",
        )
    artifact = to_artifact(store, store.resolve(model_id))
    blobs = {e.digest: e.size for e in artifact.manifest.files.values()}
    for digest in blobs:
        if not store.blob_path(digest).is_file():
            raise CorruptBlob(
                f"blob {digest[:19]}… of {model_id!r} is missing from the cache",
                hint="foundry cache verify",
            )
    locations = BlobLocations(store, ref.host)
    with Registry(ref, push=True) as registry:
        uploaded, mounted = _upload_missing(store, registry, artifact.manifest, locations, progress)
        config = artifact.oci.config
        if not registry.has_blob(config.digest):
            was_mounted, session = _try_mount(registry, locations, config.digest)
            if not was_mounted:
                registry.upload_bytes(artifact.config_bytes, config.digest, session)
        tags = [ref.tag or DEFAULT_TAG]
        if artifact.build_key:
            tags.append(build_key_tag(artifact.build_key))
        for tag in tags:
            if registry.manifest_digest(tag) != artifact.digest:
                registry.put_manifest(tag, artifact.oci_bytes, MANIFEST_MEDIA_TYPE)
        sent = registry.sent_bytes
    locations.note(ref.repository, [*blobs, config.digest])
    total = sum(blobs.values())
    progress(ProgressEvent("upload", f"{ref.repository}: done", total, total, "B", done=True))
    return PushResult(
        str(ref.with_tag(tags[0])),
        artifact.digest,
        tags,
        uploaded,
        mounted,
        len(blobs) - uploaded - mounted,
        sent,
        total,
    )


def pull(
    store: Store,
    ref: Reference,
    progress: ProgressFn = silent,
    *,
    model_id: str | None = None,
    task: str | None = None,
) -> PullResult:
    """Fetch, verify, validate and register one OCI artifact; nothing is named unless all of it holds.

    `task` (a catalog variant's) is checked against the artifact's own before any blob is
    fetched, so an alias never ends up naming a model of another kind.
    """
    # Pulled blobs are unreachable until the manifest lands: `cache gc` must wait (store lock).
    with store.registering(), Registry(ref) as registry:
        oci_bytes, digest = registry.get_manifest(ref.reference)
        oci = decode_oci_manifest(oci_bytes, str(ref))
        config = registry.get_small_blob(oci.config.digest, oci.config.size)
        artifact = read_artifact(oci_bytes, config, str(ref))
        if task is not None and (found := artifact.manifest.metadata.get("task")) != task:
            raise CatalogError(
                f"{ref} holds a {found or 'untyped'} model, but the catalog lists it as {task}",
                hint="fix the catalog entry's `task` or its `registry` reference",
            )
        fetched, fetched_bytes, resumed = _fetch_missing(
            store, registry, artifact.manifest, progress
        )
        cached, validation = receive(store, artifact, model_id=model_id, progress=progress)
    BlobLocations(store, ref.host).note(
        ref.repository, [*(e.digest for e in artifact.manifest.files.values()), oci.config.digest]
    )
    unique = len({e.digest for e in artifact.manifest.files.values()})
    return PullResult(
        cached, str(ref), digest, fetched, unique - fetched, fetched_bytes, resumed, validation
    )


def lookup_build(
    store: Store,
    remote: Reference,
    build_key: str,
    progress: ProgressFn = silent,
    *,
    model_id: str | None = None,
) -> PullResult | None:
    """The artifact someone built for `build_key`, pulled from the registry; None if nobody has."""
    try:
        return pull(store, remote.with_tag(build_key_tag(build_key)), progress, model_id=model_id)
    except RemoteNotFound:
        return None


def _upload_missing(
    store: Store,
    registry: Registry,
    manifest: Manifest,
    locations: BlobLocations,
    progress: ProgressFn,
) -> tuple[int, int]:
    """Upload each blob the registry lacks (HEAD first), mounting it instead from another
    repository of that registry known to hold it; return (uploaded, mounted)."""
    names = {e.digest: rel for rel, e in manifest.files.items()}
    blobs = {e.digest: e.size for e in manifest.files.values()}
    total = sum(blobs.values())
    uploaded = mounted = done = 0
    for digest, size in blobs.items():
        label = f"{registry.ref.repository}: {names[digest]}"
        if not registry.has_blob(digest):
            was_mounted, session = _try_mount(registry, locations, digest)
            if was_mounted:
                mounted += 1
            else:
                forward = _overall(progress, done, total, label)
                registry.upload_blob(
                    store.blob_path(digest), digest, size, forward, location=session
                )
                uploaded += 1
        done += size
        progress(ProgressEvent("upload", label, done, total, "B"))
    return uploaded, mounted


def _try_mount(
    registry: Registry, locations: BlobLocations, digest: str
) -> tuple[bool, str | None]:
    """Mount `digest` from the repository last seen holding it: `(True, None)` when the
    registry linked it, else `(False, the upload session it opened instead, or None)`."""
    sources = locations.sources(digest, besides=registry.ref.repository)
    if not sources:
        return False, None
    try:
        session = registry.mount_blob(digest, sources[0])
    except (RegistryUnauthorized, RemoteNotFound):  # no pull right on the source, or it is gone
        return False, None
    return session is None, session


def _fetch_missing(
    store: Store, registry: Registry, manifest: Manifest, progress: ProgressFn
) -> tuple[int, int, int]:
    """(blobs fetched, bytes received, bytes resumed from earlier partial files)."""
    names = {e.digest: rel for rel, e in manifest.files.items()}
    missing = {
        e.digest: e.size for e in manifest.files.values() if not store.blob_path(e.digest).is_file()
    }
    total = sum(missing.values())
    done = resumed = 0
    for digest, size in missing.items():
        label = f"{registry.ref.repository}: {names[digest]}"
        with store.lock(f"blob-{digest}"):  # two pulls of one blob must not share a partial
            if not store.blob_path(digest).is_file():
                partial = store.layout.partial(digest)
                resumed += registry.fetch_blob(
                    digest, size, partial, _overall(progress, done, total, label)
                )
                store.commit_blob(partial, digest)
        done += size
    return len(missing), total - resumed, resumed


def _overall(progress: ProgressFn, done: int, total: int, label: str) -> ProgressFn:
    """Forward one blob's events as progress over the whole transfer, labelled with its file."""

    def forward(event: ProgressEvent) -> None:
        completed = done + (event.completed or 0)
        progress(ProgressEvent(event.phase, label, completed, total, event.unit))

    return forward
