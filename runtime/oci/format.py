"""A model variant as an OCI artifact, and back: shared by the registry and by bundles.

    OCI manifest (application/vnd.oci.image.manifest.v1+json)
      config  application/vnd.foundry.model.config.v1+json   {"schema", "manifest", "build"}
      layers  application/vnd.foundry.model.file.v1          one per file, our blob's digest,
                                                             title annotation = its path
      annotations  dev.foundry.build-key, dev.foundry.model-id, org.opencontainers.image.created

The config holds our own manifest (so the manifest digest is the same on every machine) and the
artifact's build.json (provenance and quality figures travel with it). Whatever comes back is
untrusted: `read_artifact` checks every name, path and digest before anything can become a path,
and that each file the config names is a layer the registry (or bundle) vouches for.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.errors import InvalidBundle
from runtime.names import check_model_id, parse_digest
from runtime.store.manifest import Manifest, digest_bytes, encode_canonical

if TYPE_CHECKING:
    from runtime.store import CachedModel, Store

__all__ = [
    "CONFIG_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "Artifact",
    "Descriptor",
    "OciManifest",
    "build_json",
    "check_relative_path",
    "read_artifact",
    "to_artifact",
]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.foundry.model.v1"
CONFIG_MEDIA_TYPE = "application/vnd.foundry.model.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.foundry.model.file.v1"
TITLE = "org.opencontainers.image.title"
BUILD_KEY = "dev.foundry.build-key"
MODEL_ID = "dev.foundry.model-id"
CREATED = "org.opencontainers.image.created"
CONFIG_SCHEMA = 1
MAX_CONFIG_BYTES = 4 << 20


class Descriptor(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = {}


class OciManifest(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    schema_version: int
    config: Descriptor
    layers: list[Descriptor]
    media_type: str = MANIFEST_MEDIA_TYPE
    artifact_type: str = ""
    annotations: dict[str, str] = {}


class ArtifactConfig(msgspec.Struct, frozen=True):
    schema: int
    manifest: Manifest
    build: dict[str, Any] | None = None


class Artifact(msgspec.Struct, frozen=True):
    """The three things that travel: the OCI manifest, its config blob, and our manifest."""

    oci: OciManifest
    oci_bytes: bytes
    config_bytes: bytes
    manifest: Manifest

    @property
    def digest(self) -> str:
        return digest_bytes(self.oci_bytes)

    @property
    def build_key(self) -> str | None:
        return self.oci.annotations.get(BUILD_KEY)


def to_artifact(store: Store, cached: CachedModel) -> Artifact:
    """The OCI form of a cached model; encoded canonically, so pushing twice sends equal bytes."""
    manifest = cached.manifest
    config_bytes = encode_canonical(
        ArtifactConfig(CONFIG_SCHEMA, manifest, build_json(store, manifest))
    )
    layers = [
        Descriptor(LAYER_MEDIA_TYPE, entry.digest, entry.size, {TITLE: rel})
        for rel, entry in sorted(manifest.files.items())
    ]
    annotations = {MODEL_ID: manifest.model_id, CREATED: manifest.created}
    if build_key := manifest.metadata.get("build_key"):
        annotations[BUILD_KEY] = parse_digest(str(build_key))
    oci = OciManifest(
        schema_version=2,
        config=Descriptor(CONFIG_MEDIA_TYPE, digest_bytes(config_bytes), len(config_bytes)),
        layers=layers,
        artifact_type=ARTIFACT_TYPE,
        annotations={k: v for k, v in annotations.items() if v},
    )
    return Artifact(oci, encode_canonical(oci), config_bytes, manifest)


def decode_oci_manifest(data: bytes, where: str) -> OciManifest:
    try:
        oci = msgspec.json.decode(data, type=OciManifest)
    except msgspec.DecodeError as exc:
        raise InvalidBundle(f"{where} is not an OCI image manifest: {exc}") from exc
    if oci.config.media_type != CONFIG_MEDIA_TYPE:
        raise InvalidBundle(
            f"{where} is not a foundry model (config media type {oci.config.media_type!r})",
            hint="push it with `foundry cache push MODEL oci://…`",
        )
    parse_digest(oci.config.digest)
    if not 0 <= oci.config.size <= MAX_CONFIG_BYTES:
        raise InvalidBundle(f"{where}: config of {oci.config.size} bytes is out of bounds")
    return oci


def read_artifact(oci_bytes: bytes, config_bytes: bytes, where: str) -> Artifact:
    """Check an OCI manifest + config that came from outside; return them with our manifest.

    Raises:
        InvalidBundle: not ours, a path that would leave its folder, or a file no layer vouches for.
        InvalidName / InvalidDigest: a bad model id or digest.
    """
    oci = decode_oci_manifest(oci_bytes, where)
    if digest_bytes(config_bytes) != oci.config.digest:
        raise InvalidBundle(f"{where}: the config does not match its digest")
    try:
        config = msgspec.json.decode(config_bytes, type=ArtifactConfig)
    except msgspec.DecodeError as exc:
        raise InvalidBundle(f"{where}: the config is not a foundry model config: {exc}") from exc
    manifest = config.manifest
    check_model_id(manifest.model_id)
    layers = {
        (layer.annotations.get(TITLE), parse_digest(layer.digest), layer.size)
        for layer in oci.layers
    }
    for rel, entry in manifest.files.items():
        check_relative_path(rel, where)
        parse_digest(entry.digest)
        if (rel, entry.digest, entry.size) not in layers:
            raise InvalidBundle(f"{where}: file {rel!r} is not one of the artifact's layers")
    if oci.annotations.get(BUILD_KEY):
        parse_digest(oci.annotations[BUILD_KEY])
    return Artifact(oci, oci_bytes, config_bytes, manifest)


def check_relative_path(rel: str, where: str) -> str:
    """A file path inside an artifact: relative, '/'-separated, no '..', no drive, no NUL."""
    parts = PurePosixPath(rel).parts
    if (
        not rel
        or len(rel) > 1024
        or rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
        or ":" in rel
        or any(part in ("..", ".") for part in parts)
        or rel != "/".join(parts)
    ):
        raise InvalidBundle(f"{where} names the unsafe path {rel!r}, which would leave its folder")
    return rel


def build_json(store: Store, manifest: Manifest) -> dict[str, Any] | None:
    """The artifact's build.json (None: it has none, or an unreadable or oversized one)."""
    entry = manifest.files.get("build.json")
    if entry is None or entry.size > MAX_CONFIG_BYTES:
        return None
    try:
        data = json.loads(store.blob_path(entry.digest).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
