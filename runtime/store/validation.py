"""ValidationRecord: what a build, download or import proved about an artifact, one tagged union.

Each producer (compiler/validate.py, compiler/validate_media.py, runtime/artifact.py) builds one
of these Structs; build.json and the manifest keep its `encode()`d form, whose `kind` says which
it is, so readers (`foundry-build`'s table, `foundry model info`) match on the type instead of
sniffing keys. Records written before the tag existed are classified once, in `read_validation`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = [
    "Embedding",
    "Fp32Exact",
    "LoadCheck",
    "Quantized",
    "Skipped",
    "Speech",
    "ValidationRecord",
    "encode_validation",
    "read_validation",
]

log = logging.getLogger(__name__)


class Skipped(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="skipped"):
    """Not loaded: this machine lacks the execution provider."""

    skipped: str
    runnable: bool = False


class Fp32Exact(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="fp32-greedy-tokens"
):
    """fp32 chat: greedy tokens compared with transformers' own, step by step."""

    engine: str
    prompt_tokens: int
    steps: int
    matched_tokens: int
    token_agreement: float
    first_divergence: int | None
    max_abs_logit_diff: float
    exact: bool
    distinct_reference_tokens: int
    required: str = "exact"
    runnable: bool = True


class Quantized(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="quantized-quality"
):
    """Quantized chat: teacher-forced quality on the corpus against the fp32 model."""

    engine: str
    generated_tokens: int
    quality: dict[str, Any]
    floor: dict[str, Any] | None
    required: str  # floor | report
    runnable: bool = True


class Embedding(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="embeddings-cosine"
):
    """Embeddings: cosine between the artifact's and the source's sentence vectors."""

    sentences: int
    min_cosine: float
    mean_cosine: float
    threshold: float
    dimension: int
    pooling: str
    normalize: bool
    passed: bool
    runnable: bool = True


class Speech(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="kind",
    tag="speech-greedy-tokens",
    omit_defaults=True,
):
    """Speech: greedy decoder tokens on the validation audio, teacher-forced figures if any."""

    engine: str
    prompt: str
    multilingual: bool
    tokens: int
    steps: int
    matched_prefix: int
    matched_tokens: int
    token_agreement: float
    exact: bool
    required: str
    runnable: bool = True
    teacher_forced: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None


class LoadCheck(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="kind",
    tag="load-check",
    omit_defaults=True,
):
    """An imported folder: it loads (and, for chat, generates) in the runtime's engine."""

    loaded: bool = True
    generated_tokens: int | None = None
    text: str | None = None
    inputs: list[str] | None = None


ValidationRecord = Skipped | Fp32Exact | Quantized | Embedding | Speech | LoadCheck


def encode_validation(record: ValidationRecord) -> dict[str, Any]:
    """The form build.json, the manifest and `--json` output keep."""
    encoded: dict[str, Any] = msgspec.to_builtins(record)
    return encoded


def read_validation(raw: Mapping[str, Any] | None) -> ValidationRecord | None:
    """The typed record of `raw`, or None (empty, or a shape this version does not know)."""
    if not raw:
        return None
    tagged = dict(raw)
    tagged.setdefault("kind", _untagged_kind(raw))
    try:
        return msgspec.convert(tagged, ValidationRecord, strict=False)
    except msgspec.ValidationError as exc:
        log.warning("validation record not read (%s): %s", tagged.get("kind"), exc)
        return None


def _untagged_kind(raw: Mapping[str, Any]) -> str:
    """The kind of a record written before records were tagged (the one place keys decide)."""
    if "skipped" in raw:
        return "skipped"
    if "min_cosine" in raw:
        return "embeddings-cosine"
    if isinstance(raw.get("quality"), dict) and "generated_tokens" in raw:
        return "quantized-quality"
    if "first_divergence" in raw:
        return "fp32-greedy-tokens"
    return "load-check"
