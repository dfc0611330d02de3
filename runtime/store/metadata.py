"""ModelMetadata: a manifest's metadata, one typed shape for every producer and reader.

The compiler, the catalog's downloads and `foundry cache import` build a `ModelMetadata` and
the store encodes it (`encode()`), so a manifest's `metadata` has one producer shape. Manifests
written by older versions stay in users' caches, so reading is forgiving: unknown keys are
ignored, and a value of the wrong type falls back to its field's default (logged) instead of
making a cached model unusable. Readers get attributes with one default each, instead of
`.get("task", "chat")` repeated per module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.store.validation import ValidationRecord, read_validation
from runtime.tools.parsers import THINK_CLOSE

__all__ = ["METADATA_VERSION", "ModelMetadata", "template_thinks"]

log = logging.getLogger(__name__)

METADATA_VERSION = 1
"""Written by this version; a manifest without `version` predates it and reads as 0."""


class ModelMetadata(msgspec.Struct, frozen=True, kw_only=True):
    version: int = METADATA_VERSION
    task: str = "chat"  # chat | embeddings | speech
    family: str | None = None  # config.json model_type
    target: str | None = None  # cpu-int4, ...
    precision: str | None = None
    provider: str = "cpu"
    device: str = "cpu"
    backend: str | None = None  # the compiler backend that built it; None when downloaded
    tool_parser: str | None = None
    context_length: int | None = None
    synthetic: bool = False  # random weights (tests, smoke builds)
    source: str | None = None
    alias: str | None = None
    runnable: bool = True  # this machine has the execution provider
    imported: bool = False  # `foundry cache import`, not built or downloaded
    build_key: str | None = None
    seconds: float | None = None  # build wall time
    peak_rss_bytes: int | None = None  # build peak memory
    validation: dict[str, Any] | None = None  # an encoded ValidationRecord
    thinks: bool | None = None  # replies carry <think> reasoning; None: packed before it was kept

    @classmethod
    def read(cls, raw: Mapping[str, Any]) -> ModelMetadata:
        """The typed view of `raw`; never raises on what a manifest holds."""
        known = {k: v for k, v in raw.items() if k in cls.__struct_fields__}
        known.setdefault("version", 0)
        try:
            return msgspec.convert(known, cls, strict=False)
        except msgspec.ValidationError:
            kept = {}
            for key, value in known.items():
                try:
                    msgspec.convert({key: value}, cls, strict=False)
                except msgspec.ValidationError:
                    log.warning("manifest metadata %s=%r ignored: not a %s", key, value, key)
                    continue
                kept[key] = value
            return msgspec.convert(kept, cls, strict=False)

    @property
    def record(self) -> ValidationRecord | None:
        """The validation record, typed by its `kind` (store/validation.py)."""
        return read_validation(self.validation)

    def encode(self) -> dict[str, Any]:
        """The manifest's `metadata` mapping (every field, so old readers' `.get` still work)."""
        encoded: dict[str, Any] = msgspec.to_builtins(self)
        return encoded


def template_thinks(source: str) -> bool:
    """Whether a chat template knows the reasoning close marker (its replies carry reasoning).

    Decided once when an artifact is packed, downloaded or imported (`thinks`); the runtime
    scans a loaded template only for manifests written before that field existed."""
    return THINK_CLOSE in source
