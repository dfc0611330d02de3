"""Guidance grammars for onnxruntime-genai: JSON schemas and tool-call syntax, no free whitespace.

onnxruntime-genai 0.18 takes guidance per turn as (`"json_schema"` | `"lark_grammar"` |
`"regex"`, text) for llguidance. Two measured rules shape every grammar here:

* **No flexible whitespace.** With JSON's default whitespace a random-weight model emits
  `{` then whitespace until `max_tokens` (issue 8); with `"x-guidance":
  {"whitespace_flexible": false}` the same schema closes and hits EOS. Every schema we hand
  over, top level or embedded via Lark's `%json`, carries that flag.
* **Markers that are tokens are referenced by id.** A Lark string "<tool_call>" that is also
  a special token made llguidance force that token and then reject it, leaving 0.18's
  static-batch Engine permanently unhealthy. So a marker that is one token is `<[id]>`.

A forced call is framed by the `ToolFormat` row (formats.py) that parses the family's replies.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from runtime.errors import InvalidRequest
from runtime.tools.formats import forced_format

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "NO_FLEX",
    "json_depth",
    "json_schema_guidance",
    "marker_tokens",
    "reply_format_guidance",
    "strict_schema",
    "tool_call_guidance",
]

NO_FLEX = {"whitespace_flexible": False}
MAX_SCHEMA_DEPTH = 64  # JSON levels (about 30 nested objects); 5,000 raised RecursionError (500)


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with llguidance's whitespace freedom switched off (see module docstring).

    Integers without bounds get I-JSON's (|n| < 2**53): an unbounded digit run is the other
    way a random-weight model never finishes (measured: `{"a":68777...` to max_tokens), and
    larger integers do not survive a round trip through most JSON parsers anyway.
    """
    if json_depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(
            f"the JSON schema is nested deeper than {MAX_SCHEMA_DEPTH} levels",
            param="response_format",
        )
    options = dict(schema.get("x-guidance") or {})
    options.update(NO_FLEX)
    return {**_bounded(schema), "x-guidance": options}


def json_depth(node: Any) -> int:
    """Nesting depth of a JSON value, iteratively (a recursive walk is what overflowed)."""
    deepest, todo = 0, [(node, 1)]
    while todo:
        value, level = todo.pop()
        deepest = max(deepest, level)
        if level > MAX_SCHEMA_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            todo.extend((child, level + 1) for child in children)
    return deepest


def _bounded(node: Any) -> Any:
    if isinstance(node, list):
        return [_bounded(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: (_bounded(value) if key not in ("const", "enum", "default", "examples") else value)
        for key, value in node.items()
    }
    if out.get("type") == "integer":
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -(2**53) + 1
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = 2**53 - 1
    return out


def json_schema_guidance(schema: dict[str, Any]) -> tuple[str, str]:
    """Guidance that makes the whole reply one JSON value matching `schema`."""
    return "json_schema", json.dumps(strict_schema(schema), ensure_ascii=False)


def reply_format_guidance(
    kind: str, schema: dict[str, Any] | None, *, where: str, param: str
) -> tuple[str, str] | None:
    """A reply format (chat's `response_format`, Responses' `text.format`) as guidance:
    "text" none, "json_object" any object, "json_schema" its `schema`.

    Raises:
        InvalidRequest: json_schema without a schema.
    """
    if kind == "json_object":
        return json_schema_guidance({"type": "object"})
    if kind != "json_schema":
        return None
    if schema is None:
        raise InvalidRequest(f"{where} json_schema needs a 'schema'", param=param)
    return json_schema_guidance(schema)


@lru_cache(maxsize=16)
def marker_tokens(artifact: Path) -> dict[str, int]:
    """Added tokens of an artifact's tokenizer.json: text -> id (special or not)."""
    try:
        data = json.loads((artifact / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if "content" in t}


def _call_schema(tool: dict[str, Any], arg_key: str) -> dict[str, Any]:
    function = tool["function"]
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, arg_key: parameters},
        "required": ["name", arg_key],
        "additionalProperties": False,
    }


def _lark_piece(text: str, tokens: dict[str, int]) -> list[str]:
    """Lark items spelling `text`: a token reference for each added-token text in it (the
    longest first where they overlap), the plain runs between them as strings."""
    names = sorted((t for t in tokens if t and t in text), key=len, reverse=True)
    parts = re.split(f"({'|'.join(map(re.escape, names))})", text) if names else [text]
    return [f"<[{tokens[p]}]>" if p in tokens else json.dumps(p) for p in parts if p]


def tool_call_guidance(
    format_name: str | None,
    tools: list[dict[str, Any]],
    *,
    tokens: dict[str, int] | None = None,
) -> tuple[str, str]:
    """Lark guidance forcing exactly one call to one of `tools` (as `calls.plan_tools` checked
    them), framed as `forced_format`: one call, not a list, keeps a weak model from looping
    until `max_tokens`."""
    syntax = forced_format(format_name)
    calls = [_call_schema(t, syntax.arg_keys[0]) for t in tools]
    body: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if syntax.as_list:
        body = {"type": "array", "items": body, "minItems": 1, "maxItems": 1}
    body = strict_schema(body)
    before, after = syntax.frame
    items = [*_lark_piece(before, tokens or {}), "call", *_lark_piece(after, tokens or {})]
    grammar = f"start: {' '.join(items)}\ncall: %json {json.dumps(body, ensure_ascii=False)}\n"
    return "lark_grammar", grammar
