"""Names that may become paths: model ids, aliases and digests.

Grammar (checked before any path is built, so `../` or an absolute path never reaches the file system):

    model_id := segment (":" version)?        e.g. qwen2.5-0.5b-instruct-generic-cpu-int4:1
    segment  := [A-Za-z0-9][A-Za-z0-9._-]{0,127}   (no "..")
    version  := [A-Za-z0-9][A-Za-z0-9._-]{0,31}
    digest   := "sha256:" [0-9a-f]{64}

On disk a model id's ":" becomes "@" (":" is not allowed in Windows file names).
"""

from __future__ import annotations

import re

from runtime.errors import InvalidDigest, InvalidName

__all__ = ["check_model_id", "digest_hex", "model_id_filename", "parse_digest"]

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_MODEL_ID = re.compile(rf"^{_SEGMENT}(:[A-Za-z0-9][A-Za-z0-9._-]{{0,31}})?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_model_id(value: str) -> str:
    """Return `value` if it is a valid model id or alias, else raise InvalidName."""
    if not isinstance(value, str) or not _MODEL_ID.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"invalid model name {value!r}: use letters, digits, '.', '_', '-' and one ':version'",
            param="model",
        )
    return value


def model_id_filename(model_id: str) -> str:
    """The file name a valid model id maps to (refs/<this>)."""
    return check_model_id(model_id).replace(":", "@")


def parse_digest(value: str) -> str:
    """Return `value` if it is `sha256:<64 lowercase hex>`, else raise InvalidDigest."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidDigest(f"invalid digest {value!r}: expected sha256:<64 hex digits>")
    return value


def digest_hex(digest: str) -> str:
    return parse_digest(digest).split(":", 1)[1]
