"""Find where a JSON value ends in text that may still be growing.

Tool-call parsers stream argument fragments before the model has finished the object. These
functions return `None` for "not finished yet" and raise `Malformed` when no continuation
could make the text valid; validation proper is left to `json.loads` on the slice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["Malformed", "ObjectScan", "scan_object", "scan_string", "scan_value", "skip_ws"]

_WS = " \t\r\n"
_SCALAR = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null")
_SCALAR_CHARS = set("-+.0123456789eEtruefalsn")


class Malformed(ValueError):
    """The text cannot be the start of the JSON shape the parser expects."""


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def scan_string(text: str, i: int) -> int | None:
    """End (exclusive) of the JSON string starting at `text[i] == '"'`, or None if unfinished."""
    if i >= len(text) or text[i] != '"':
        raise Malformed(f"expected a string at {i}")
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == '"':
            return j + 1
        j += 1
    return None


def scan_value(text: str, i: int) -> int | None:
    """End (exclusive) of the JSON value starting at `i`, or None if it may still grow."""
    if i >= len(text):
        return None
    ch = text[i]
    if ch == '"':
        return scan_string(text, i)
    if ch in "{[":
        return _scan_container(text, i)
    j = i
    while j < len(text) and text[j] in _SCALAR_CHARS:
        j += 1
    if j == len(text):
        return None  # a number or literal may continue
    if _SCALAR.fullmatch(text, i, j) is None:
        raise Malformed(f"not a JSON value at {i}")
    return j


def _scan_container(text: str, i: int) -> int | None:
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == '"':
            end = scan_string(text, j)
            if end is None:
                return None
            j = end
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


@dataclass(slots=True)
class ObjectScan:
    """What is known so far about one tool-call object `{"name": ..., "arguments": ...}`."""

    name: str | None = None
    args_start: int | None = None
    args_end: int | None = None
    end: int | None = None  # end (exclusive) of the whole object


def scan_object(text: str, i: int, arg_keys: tuple[str, ...]) -> ObjectScan:
    """Scan a call object starting at `text[i] == '{'` as far as the text goes.

    Raises:
        Malformed: the text is not (the start of) a JSON object.
    """
    scan = ObjectScan()
    if i >= len(text) or text[i] != "{":
        raise Malformed(f"expected an object at {i}")
    j = skip_ws(text, i + 1)
    if j < len(text) and text[j] == "}":
        scan.end = j + 1
        return scan
    while j < len(text):
        key_end = scan_string(text, j)
        if key_end is None:
            return scan
        key = json.loads(text[j:key_end])
        j = skip_ws(text, key_end)
        if j >= len(text):
            return scan
        if text[j] != ":":
            raise Malformed(f"expected ':' at {j}")
        j = skip_ws(text, j + 1)
        if j >= len(text):
            return scan
        value_end = scan_value(text, j)
        if key in arg_keys:
            scan.args_start, scan.args_end = j, value_end
        elif key == "name" and value_end is not None:
            value = json.loads(text[j:value_end])
            if not isinstance(value, str):
                raise Malformed("the tool name is not a string")
            scan.name = value
        if value_end is None:
            return scan
        j = skip_ws(text, value_end)
        if j >= len(text):
            return scan
        if text[j] == "}":
            scan.end = j + 1
            return scan
        if text[j] != ",":
            raise Malformed(f"expected ',' or '}}' at {j}")
        j = skip_ws(text, j + 1)
    return scan
