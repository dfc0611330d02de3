"""Bundles for air-gapped machines: cached models as an OCI image layout in one tar file.

    oci-layout               {"imageLayoutVersion": "1.0.0"}
    index.json               one descriptor per model, ref.name annotation = its model id
    blobs/sha256/<hex>       OCI manifests, configs and our blobs (the same artifact as a push)

The same format a registry holds, so `oras` and `skopeo` read it. Import treats the file as
hostile: only those three kinds of member are accepted, every blob is hashed against its name
while it streams into tmp/ (blobs the store has are skipped, not written), no member name ever
becomes a path (paths are built from checked digests), and nothing is registered until every
model in the bundle is whole and loads.
"""

from __future__ import annotations

import re
import tarfile
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from runtime.errors import InvalidBundle, SourceError
from runtime.names import check_model_id, parse_digest
from runtime.oci.format import (
    MANIFEST_MEDIA_TYPE,
    Artifact,
    decode_oci_manifest,
    read_artifact,
    to_artifact,
)
from runtime.oci.receive import register_received, validate_received
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.store.atomic import CHUNK, staged_file
from runtime.store.manifest import digest_bytes, encode_canonical

if TYPE_CHECKING:
    from runtime.store import CachedModel, Store

__all__ = ["export_bundle", "import_bundle"]

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
MAX_JSON_BYTES = 4 << 20
_BLOB = re.compile(r"^(?:\./)?blobs/sha256/([0-9a-f]{64})$")
_DIRS = {"blobs", "blobs/sha256", ".", "./blobs", "./blobs/sha256"}


class _IndexEntry(msgspec.Struct, frozen=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = {}


class _Index(msgspec.Struct, frozen=True, rename="camel"):
    schema_version: int
    manifests: list[_IndexEntry]


@dataclass(frozen=True)
class ImportResult:
    models: list[CachedModel]
    written_blobs: int
    skipped_blobs: int  # already in the store: read past, not written
    validation: dict[str, dict[str, Any]]


# --- export ---------------------------------------------------------------------------------
def export_bundle(
    store: Store, model_ids: list[str], out: Path, progress: ProgressFn = silent
) -> dict[str, Any]:
    """Write `out` (atomically: a temp name beside it, then rename); return what it holds."""
    artifacts = [to_artifact(store, store.resolve(m)) for m in model_ids]
    entries = [
        {
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": a.digest,
            "size": len(a.oci_bytes),
            "annotations": {REF_NAME: model_id},
        }
        for model_id, a in zip(model_ids, artifacts, strict=True)
    ]
    index = encode_canonical(
        {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries}
    )
    blobs = {e.digest: e.size for a in artifacts for e in a.manifest.files.values()}
    total, done = sum(blobs.values()), 0
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", LAYOUT)
            _add_bytes(tar, "index.json", index)
            for a in artifacts:
                _add_bytes(tar, _member(a.digest), a.oci_bytes)
                _add_bytes(tar, _member(a.oci.config.digest), a.config_bytes)
            for digest, size in blobs.items():
                tar.add(store.blob_path(digest), arcname=_member(digest), recursive=False)
                done += size
                progress(ProgressEvent("export", out.name, done, total, "B"))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "models": model_ids, "blobs": len(blobs), "bytes": out.stat().st_size}


def _member(digest: str) -> str:
    return f"blobs/sha256/{digest.split(':', 1)[1]}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# --- import ---------------------------------------------------------------------------------
def import_bundle(store: Store, bundle: Path, progress: ProgressFn = silent) -> ImportResult:
    """Register every model of an OCI-layout tar; all or nothing.

    Raises:
        InvalidBundle: a member that is not part of an OCI layout, a blob whose bytes do not match
            its name, a missing blob, or an artifact that is not a foundry model.
        ValidationFailed: a model that does not load here (nothing is registered).
    """
    if not bundle.is_file():
        raise SourceError(f"bundle {str(bundle)!r} does not exist")
    with store.staging("bundle") as staging:
        small, written, skipped = _unpack(store, bundle, staging.path, progress)
        artifacts = _artifacts(store, staging.path, small, bundle.name)
        for _, artifact in artifacts:  # every blob of every model is present, or nothing moves
            for entry in artifact.manifest.files.values():
                if not _has(store, staging.path, entry.digest):
                    raise InvalidBundle(f"{bundle.name} lacks blob {entry.digest[:19]}…")
        for _, artifact in artifacts:
            for entry in artifact.manifest.files.values():
                staged = staging.path / entry.digest.split(":", 1)[1]
                if staged.exists():
                    store.commit_blob(staged, entry.digest)
        validation = {
            artifact.manifest.model_id: validate_received(store, artifact, progress)
            for _, artifact in artifacts
        }
    models = [
        register_received(store, a, model_id=name, progress=progress) for name, a in artifacts
    ]
    return ImportResult(models, written, skipped, validation)


def _unpack(
    store: Store, bundle: Path, into: Path, progress: ProgressFn
) -> tuple[dict[str, bytes], int, int]:
    """Stream the tar once: small JSON members into memory, blobs hashed into `into`/<hex>."""
    small: dict[str, bytes] = {}
    written = skipped = 0
    try:
        with tarfile.open(bundle, "r:*") as tar:
            for member in tar:
                name = member.name
                if member.isdir() and name.rstrip("/") in _DIRS:
                    continue
                if not member.isreg():
                    raise InvalidBundle(
                        f"{bundle.name} holds {name!r}, which is not a regular file"
                    )
                match = _BLOB.match(name)
                if name.removeprefix("./") in ("oci-layout", "index.json"):
                    small[name.removeprefix("./")] = _read_small(tar, member, bundle.name)
                elif match is None:
                    raise InvalidBundle(
                        f"{bundle.name} holds {name!r}, which is not part of an OCI image layout"
                    )
                elif store.blob_path(f"sha256:{match.group(1)}").is_file():
                    skipped += 1
                else:
                    _receive_blob(tar, member, match.group(1), into, store, bundle.name)
                    written += 1
                    progress(ProgressEvent("import", name[-64:][:12], written, None, "blobs"))
    except tarfile.TarError as exc:
        raise InvalidBundle(f"{bundle.name} is not a readable tar file: {exc}") from exc
    return small, written, skipped


def _receive_blob(
    tar: tarfile.TarFile, member: tarfile.TarInfo, hex_: str, into: Path, store: Store, what: str
) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    with staged_file(store.layout.tmp, "bundle-blob") as staged:
        _copy(source, staged)
        if staged.digest != f"sha256:{hex_}":
            raise InvalidBundle(
                f"{what}: blob {hex_[:12]}… does not match its digest (got {staged.digest[:19]}…)",
                hint="the bundle is damaged or was tampered with: export it again",
            )
        staged.commit(into / hex_)


def _copy(source: IO[bytes], staged: Any) -> None:
    while chunk := source.read(CHUNK):
        staged.write(chunk)


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, what: str) -> bytes:
    if member.size > MAX_JSON_BYTES:
        raise InvalidBundle(f"{what}: {member.name} is larger than 4 MiB")
    source = tar.extractfile(member)
    return source.read() if source is not None else b""


def _artifacts(
    store: Store, staged: Path, small: dict[str, bytes], what: str
) -> list[tuple[str, Artifact]]:
    """(model id, artifact) per index entry, each checked by `read_artifact`."""
    if "oci-layout" not in small or "index.json" not in small:
        raise InvalidBundle(f"{what} is not an OCI image layout (no oci-layout or index.json)")
    try:
        index = msgspec.json.decode(small["index.json"], type=_Index)
    except msgspec.DecodeError as exc:
        raise InvalidBundle(f"{what}: index.json is not an OCI index: {exc}") from exc
    found = []
    for entry in index.manifests:
        oci_bytes = _small_blob(store, staged, entry.digest, what)
        if len(oci_bytes) != entry.size:
            raise InvalidBundle(f"{what}: manifest {entry.digest[:19]}… has the wrong size")
        oci = decode_oci_manifest(oci_bytes, what)
        config = _small_blob(store, staged, oci.config.digest, what)
        artifact = read_artifact(oci_bytes, config, what)
        name = check_model_id(entry.annotations.get(REF_NAME) or artifact.manifest.model_id)
        found.append((name, artifact))
    if not found:
        raise InvalidBundle(f"{what} holds no models")
    return found


def _small_blob(store: Store, staged: Path, digest: str, what: str) -> bytes:
    hex_ = parse_digest(digest).split(":", 1)[1]
    for path in (staged / hex_, store.blob_path(digest)):
        with suppress(OSError):
            if path.stat().st_size <= MAX_JSON_BYTES:
                data = path.read_bytes()
                if digest_bytes(data) == digest:
                    return data
    raise InvalidBundle(f"{what} lacks blob {digest[:19]}…")


def _has(store: Store, staged: Path, digest: str) -> bool:
    return (staged / digest.split(":", 1)[1]).is_file() or store.blob_path(digest).is_file()
