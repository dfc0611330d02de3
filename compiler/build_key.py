"""The build key: what an artifact depends on, hashed, so the same inputs never build twice.

    build_key = sha256(canonical JSON of {source digest, recipe name, the resolved target
                                          section, tool versions, key schema})

Only the *resolved* target section is hashed, never the whole recipe file: editing another
target or a comment does not invalidate builds. Never imports heavy modules.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from compiler.recipe import Target

__all__ = ["KEY_SCHEMA", "build_key", "key_inputs", "short"]

# Bump when the meaning of a key changes (e.g. pack writes a new file).
KEY_SCHEMA = 1


def key_inputs(
    source_digest: str, recipe_name: str, target: Target, tools: dict[str, str]
) -> dict[str, Any]:
    return {
        "key_schema": KEY_SCHEMA,
        "source": source_digest,
        "recipe": recipe_name,
        "target": msgspec.to_builtins(target),
        "tools": dict(sorted(tools.items())),
    }


def build_key(source_digest: str, recipe_name: str, target: Target, tools: dict[str, str]) -> str:
    """`sha256:<hex>` over the canonical JSON of `key_inputs`."""
    data = msgspec.json.encode(
        key_inputs(source_digest, recipe_name, target, tools), order="sorted"
    )
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def short(key: str) -> str:
    return key.split(":", 1)[1][:12]
