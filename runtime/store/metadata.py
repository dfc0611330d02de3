"""ModelMetadata: the manifest metadata the runtime reads, typed, read leniently.

The compiler, the catalog's downloads and `foundry cache import` write a manifest's
`metadata` as a plain mapping, and manifests written by older versions stay in users' caches,
so reading is forgiving: unknown keys are ignored, and a value of the wrong type falls back to
its field's default (logged) instead of making a cached model unusable. Readers get
attributes with one default each, instead of `.get("task", "chat")` repeated per module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["ModelMetadata"]

log = logging.getLogger(__name__)


class ModelMetadata(msgspec.Struct, frozen=True, kw_only=True):
    task: str = "chat"  # chat | embeddings | speech
    family: str | None = None  # config.json model_type
    target: str | None = None  # cpu-int4, ...
    precision: str | None = None
    provider: str = "cpu"
    device: str = "cpu"
    tool_parser: str | None = None
    context_length: int | None = None
    synthetic: bool = False  # random weights (tests, smoke builds)
    source: str | None = None
    alias: str | None = None
    validation: dict[str, Any] | None = None

    @classmethod
    def read(cls, raw: Mapping[str, Any]) -> ModelMetadata:
        """The typed view of `raw`; never raises on what a manifest holds."""
        known = {k: v for k, v in raw.items() if k in cls.__struct_fields__}
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
