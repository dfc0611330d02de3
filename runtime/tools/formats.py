"""One row per tool-call format: how a family marks its calls, read and written from the same data.

The manifest names the format (`ModelMetadata.tool_parser`; an older manifest falls back to
`family_format`). A `ToolFormat` both reads a reply's tool region (`scan`, for parsers.py)
and frames a forced call (for grammar.py), so the grammar writes exactly what the parser reads:

    qwen    <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   (Qwen2.5, Qwen3,
            DeepSeek-R1 Qwen distills, Hermes)
    mistral [TOOL_CALLS] [{"name": "f", "arguments": {...}}]   (v0.3) and
            [TOOL_CALLS]f[ARGS]{...} / [TOOL_CALLS]f[CALL_ID]id[ARGS]{...}   (v11+ tokenizers)
    llama3  {"name": "f", "parameters": {...}}, optionally after <|python_tag|>, `;`-separated
    phi4    <|tool_call|>[{"name": "f", "arguments": {...}}]<|/tool_call|>  (also `functools[...]`)

Text may still be growing: a call is complete, unfinished, or `Malformed` (never a call).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field, replace

from runtime.tools.jsonscan import Malformed, scan_object, scan_value, skip_ws

__all__ = [
    "FORMATS",
    "CallState",
    "Scan",
    "ToolFormat",
    "family_format",
    "forced_format",
    "held_prefix",
    "tool_format",
]


@dataclass
class CallState:
    name: str | None = None
    arguments: str = ""  # the part that may be shown now
    complete: bool = False


@dataclass
class Scan:
    content: str
    calls: list[CallState] = field(default_factory=list)


@dataclass(frozen=True)
class ToolFormat:
    """How one family writes tool calls. With no markers (the "none" row) there are none."""

    name: str
    markers: tuple[str, ...] = ()  # each starts the tool region; a forced call writes the first
    close: str = ""  # ends each call (when calls `repeat`) or the whole region
    repeat: str = ""  # what starts the next call after one ends ("" : one region, one body)
    arg_keys: tuple[str, ...] = ("arguments",)  # the arguments' key; a forced call writes the first
    as_list: bool = False  # a body is a JSON list of calls (one bare object is read too)
    named: bool = False  # a body may also be Mistral v11's `name[ARGS]{...}`
    # Characters that, leading the reply, start calls with no marker: a marker that is a
    # special token is dropped by onnxruntime-genai's decoder, so only the JSON is left.
    bare: str = ""
    # The reply *is* the call (Llama 3.1): calls only at its start, a forced call is bare JSON.
    whole_reply: bool = False
    pad: str = ""  # what a forced call writes inside its marker and close (Qwen's template: "\n")
    short_ids: bool = False  # Mistral's template rejects ids that are not exactly 9 alphanumerics
    families: tuple[str, ...] = ()  # config.json `model_type`s that write it (family_format)

    @property
    def frame(self) -> tuple[str, str]:
        """(before, after) the JSON of a forced call."""
        if self.whole_reply or not self.markers:
            return "", ""
        return self.markers[0] + self.pad, self.pad + self.close if self.close else ""

    def new_id(self) -> str:
        if self.short_ids:
            return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
        return "call_" + secrets.token_hex(12)

    def scan(self, text: str, *, final: bool) -> Scan:
        """What `text` (reasoning already removed) shows so far. Raises Malformed."""
        region = self._region_start(text)
        if region is None:
            hold = 0 if final else self._content_hold(text)
            return Scan(text[: len(text) - hold])
        at, begin = region
        calls, end = self._scan_calls(text, begin)
        content = text[:at]
        if end is not None and text[end:].strip():
            content += text[end:]
        if final and any(not c.complete for c in calls):
            raise Malformed("an unfinished tool call")
        if final and not calls:
            raise Malformed("a tool-call marker without a call")
        return Scan(content, calls)

    def _region_start(self, text: str) -> tuple[int, int] | None:
        """(start of the tool region, index where calls begin), or None if not (yet) seen."""
        j = skip_ws(text, 0)
        if self.whole_reply:
            found = [(j, m) for m in self.markers if text.startswith(m, j)]
        else:
            found = [(text.find(m), m) for m in self.markers if m in text]
        if found:
            at, marker = min(found)
            return at, at + len(marker)
        if self.bare and text[j : j + 1] and text[j] in self.bare:
            if any(m.startswith(text[j:]) for m in self.markers):
                return None  # "[TOOL_CA..." is a marker arriving, not a bare list
            return j, j
        return None

    def _content_hold(self, text: str) -> int:
        """How many trailing characters of plain content to hold back (a marker may follow)."""
        if not self.whole_reply:
            return held_prefix(text, self.markers)
        stripped = text.lstrip()
        if not stripped or any(m.startswith(stripped) for m in self.markers):
            return len(text)  # the reply may still turn out to be a call
        return 0

    def _scan_calls(self, text: str, i: int) -> tuple[list[CallState], int | None]:
        """Calls from `i` on, and the index where the tool region ended (None if it may go on)."""
        calls: list[CallState] = []
        while True:
            j = skip_ws(text, i)
            if j >= len(text):
                return calls, None
            more, end = self._scan_body(text, j)
            calls.extend(more)
            if end is None:
                return calls, None
            j = skip_ws(text, end)
            if self.close and text.startswith(self.close, j):
                j += len(self.close)
                if not self.repeat:
                    return calls, j
                j = skip_ws(text, j)
            elif self.close and _arriving(text, j, self.close):
                return calls, None
            if self.repeat and text.startswith(self.repeat, j):
                i = j + len(self.repeat)
                continue
            if self.repeat and _arriving(text, j, self.repeat):
                return calls, None
            return calls, j

    def _scan_body(self, text: str, j: int) -> tuple[list[CallState], int | None]:
        if self.named and text[j] not in "[{":
            return _scan_named(text, j)
        if self.as_list and text[j] != "{":  # a list format reads one bare object too
            return _scan_call_list(text, j, self.arg_keys)
        call, end = _call_from_object(text, j, self.arg_keys)
        return [call], end


_QWEN = ToolFormat(
    "qwen",
    markers=("<tool_call>",),
    close="</tool_call>",
    repeat="<tool_call>",
    bare="{",
    pad="\n",
    families=("qwen2", "qwen3"),
)
FORMATS: dict[str, ToolFormat] = {
    f.name: f
    for f in (
        ToolFormat("none"),
        _QWEN,
        replace(_QWEN, name="hermes", families=()),
        ToolFormat(
            "mistral",
            markers=("[TOOL_CALLS]",),
            repeat="[TOOL_CALLS]",
            as_list=True,
            named=True,
            bare="[{",
            short_ids=True,
            families=("mistral",),
        ),
        ToolFormat(
            "llama3",
            markers=("<|python_tag|>",),
            repeat=";",
            arg_keys=("parameters", "arguments"),
            bare="{",
            whole_reply=True,
            families=("llama",),
        ),
        ToolFormat(
            "phi4",
            markers=("<|tool_call|>", "functools"),
            close="<|/tool_call|>",
            arg_keys=("arguments", "parameters"),
            as_list=True,
            bare="[{",
        ),
    )
}


def tool_format(name: str | None) -> ToolFormat:
    """The format a manifest names (`ModelMetadata.tool_parser`); unknown or None -> "none"."""
    return FORMATS.get(name or "none", FORMATS["none"])


def forced_format(name: str | None) -> ToolFormat:
    """The format a forced call is written and read in: the model's own, or Qwen's (Hermes)
    when it has none, the syntax most small instruct models follow."""
    chosen = tool_format(name)
    return chosen if chosen.markers else _QWEN


def family_format(family: str | None) -> str | None:
    """The format name a model family usually writes (None: no known tool syntax)."""
    return next((n for n, f in FORMATS.items() if family and family in f.families), None)


def held_prefix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that could still grow into a marker."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


def _arriving(text: str, j: int, marker: str) -> bool:
    """Whether the rest of `text` from `j` may still grow into `marker`."""
    return len(text) - j < len(marker) and marker.startswith(text[j:])


def _call_from_object(text: str, i: int, arg_keys: tuple[str, ...]) -> tuple[CallState, int | None]:
    """One call object at `i`: its state so far and where it ends (None if unfinished)."""
    scan = scan_object(text, i, arg_keys)
    call = CallState(name=scan.name)
    if scan.args_start is not None and text[scan.args_start] in "{[":
        call.arguments = text[scan.args_start : scan.args_end or len(text)]
    elif scan.args_start is not None and scan.args_end is not None:
        call.arguments = _normalise_arguments(text[scan.args_start : scan.args_end])
    if scan.end is not None:
        if scan.name is None:
            raise Malformed("a tool call without a name")
        if scan.args_start is None:
            call.arguments = "{}"
        json.loads(call.arguments)  # raises ValueError (Malformed's base) when invalid
        call.complete = True
    return call, scan.end


def _normalise_arguments(raw: str) -> str:
    """Arguments written as a JSON string holding JSON (some models do this) -> that JSON."""
    value = json.loads(raw)
    if isinstance(value, str):
        json.loads(value)
        return value
    return json.dumps(value, ensure_ascii=False)


def _scan_call_list(
    text: str, i: int, arg_keys: tuple[str, ...]
) -> tuple[list[CallState], int | None]:
    """A JSON list of call objects starting at `i`."""
    if text[i] != "[":
        raise Malformed(f"expected a list of calls at {i}")
    calls: list[CallState] = []
    j = skip_ws(text, i + 1)
    while j < len(text):
        if text[j] == "]" and not calls:
            return calls, j + 1
        call, end = _call_from_object(text, j, arg_keys)
        calls.append(call)
        if end is None:
            return calls, None
        j = skip_ws(text, end)
        if j >= len(text):
            return calls, None
        if text[j] == "]":
            return calls, j + 1
        if text[j] != ",":
            raise Malformed(f"expected ',' or ']' at {j}")
        j = skip_ws(text, j + 1)
    return calls, None


def _scan_named(text: str, i: int) -> tuple[list[CallState], int | None]:
    """Mistral v11's `name[ARGS]{...}` (or `name[CALL_ID]id[ARGS]{...}`) at `i`."""
    at = text.find("[ARGS]", i)
    if at < 0:
        _check_named_prefix(text[i:])
        return [], None
    name = text[i:at].split("[CALL_ID]")[0].strip()
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise Malformed(f"not a tool name: {name!r}")
    j = skip_ws(text, at + len("[ARGS]"))
    call = CallState(name=name)
    if j >= len(text):
        return [call], None
    end = scan_value(text, j)
    call.arguments = text[j : end or len(text)]
    if end is not None:
        json.loads(call.arguments)
        call.complete = True
    return [call], end


def _check_named_prefix(rest: str) -> None:
    """`name`, `name[ARG`, `name[CALL_ID]id[AR`...: may still become `name[...][ARGS]`."""
    k = rest.find("[")
    if k < 0:
        return
    tail = rest[k:]
    if tail.startswith("[CALL_ID]"):
        tail = tail[len("[CALL_ID]") :]
        k = tail.find("[")
        tail = tail[k:] if k >= 0 else ""
    elif "[CALL_ID]".startswith(tail):
        return
    if tail and not "[ARGS]".startswith(tail):
        raise Malformed("expected [ARGS] after the tool name")
