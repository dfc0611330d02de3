"""Per-family tool-call parsers: model text -> (content, tool_calls, reasoning).

Each family writes tool calls its own way; the manifest names the parser
(`metadata["tool_parser"]`, set by the compiler's recipe) and `get_parser`
looks it up in `PARSERS`, so routes never branch on the family:

    qwen    <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   (Qwen2.5, Qwen3,
            DeepSeek-R1 Qwen distills, Hermes)
    mistral [TOOL_CALLS] [{"name": "f", "arguments": {...}}]   (v0.3) and
            [TOOL_CALLS]f[ARGS]{...} / [TOOL_CALLS]f[CALL_ID]id[ARGS]{...}   (v11+ tokenizers)
    llama3  {"name": "f", "parameters": {...}}, optionally after <|python_tag|>, `;`-separated
    phi4    <|tool_call|>[{"name": "f", "arguments": {...}}]<|/tool_call|>  (also `functools[...]`)

`<think>...</think>` (DeepSeek-R1, Qwen3) is split off as reasoning first, whatever the family.
Both entry points work on the same scan of the text so far: `parse` for a finished
reply, `StreamParser` for deltas the way OpenAI streams them (a call's id and name
first, then argument fragments whose concatenation is the final `arguments`).
Malformed output is returned as plain content; nothing here raises on model text.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field

from runtime.tools.jsonscan import Malformed, scan_object, scan_value, skip_ws

__all__ = [
    "FORMATS",
    "PARSERS",
    "Delta",
    "ParsedOutput",
    "StreamParser",
    "ToolCall",
    "ToolFormat",
    "ToolParser",
    "ToolSyntax",
    "family_format",
    "get_parser",
    "parse",
    "tool_format",
]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model wrote it (or "{}" when absent)


@dataclass
class ParsedOutput:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None


@dataclass
class Delta:
    """One streamed piece: content, reasoning, or a fragment of tool call `index`."""

    content: str | None = None
    reasoning: str | None = None
    index: int | None = None
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass
class CallState:
    name: str | None = None
    arguments: str = ""  # the part that may be shown now
    complete: bool = False


@dataclass
class Scan:
    content: str
    calls: list[CallState]


def _held_prefix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that could still grow into a marker."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


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


class ToolParser:
    """Base: no tool syntax at all (content and reasoning only)."""

    name = "none"
    markers: tuple[str, ...] = ()
    arg_keys: tuple[str, ...] = ("arguments",)
    # Characters that, leading the reply, start calls with no marker: a marker that is a
    # special token is dropped by onnxruntime-genai's decoder, so only the JSON is left.
    bare: str = ""

    def new_id(self) -> str:
        return "call_" + secrets.token_hex(12)

    def region_start(self, text: str) -> tuple[int, int] | None:
        """(start of the tool region, index where calls begin), or None if not (yet) seen."""
        found = [(text.find(m), m) for m in self.markers if m in text]
        if found:
            at, marker = min(found)
            return at, at + len(marker)
        j = skip_ws(text, 0)
        if self.bare and text[j : j + 1] and text[j] in self.bare:
            if any(m.startswith(text[j:]) for m in self.markers):
                return None  # "[TOOL_CA..." is a marker arriving, not a bare list
            return j, j
        return None

    def content_hold(self, text: str) -> int:
        """How many trailing characters of plain content to hold back (a marker may follow)."""
        return _held_prefix(text, self.markers)

    def scan_calls(self, text: str, i: int) -> tuple[list[CallState], int | None]:
        """Calls from `i` on, and the index where the tool region ended (None if it may go on)."""
        return [], i

    def scan(self, text: str, *, final: bool) -> Scan:
        """What `text` (reasoning already removed) shows so far. Raises Malformed."""
        region = self.region_start(text)
        if region is None:
            hold = 0 if final else self.content_hold(text)
            return Scan(text[: len(text) - hold], [])
        at, begin = region
        calls, end = self.scan_calls(text, begin)
        content = text[:at]
        if end is not None and text[end:].strip():
            content += text[end:]
        if final and any(not c.complete for c in calls):
            raise Malformed("an unfinished tool call")
        if final and not calls:
            raise Malformed("a tool-call marker without a call")
        return Scan(content, calls)


class QwenParser(ToolParser):
    """`<tool_call>{json}</tool_call>` blocks (Hermes format), separated by whitespace."""

    name = "qwen"
    markers = ("<tool_call>",)
    bare = "{"
    close = "</tool_call>"

    def scan_calls(self, text: str, i: int) -> tuple[list[CallState], int | None]:
        calls: list[CallState] = []
        while True:
            j = skip_ws(text, i)
            if j >= len(text):
                return calls, None
            call, end = _call_from_object(text, j, self.arg_keys)
            calls.append(call)
            if end is None:
                return calls, None
            j = skip_ws(text, end)
            if text.startswith(self.close, j):
                j = skip_ws(text, j + len(self.close))
            elif len(text) - j < len(self.close) and self.close.startswith(text[j:]):
                return calls, None  # the closing tag is arriving
            if text.startswith(self.markers[0], j):
                i = j + len(self.markers[0])
                continue
            if len(text) - j < len(self.markers[0]) and self.markers[0].startswith(text[j:]):
                return calls, None
            return calls, j


class Phi4Parser(ToolParser):
    """`<|tool_call|>[{...}, ...]<|/tool_call|>`; also the `functools[...]` prompt-injected form."""

    name = "phi4"
    markers = ("<|tool_call|>", "functools")
    bare = "[{"
    arg_keys = ("arguments", "parameters")
    close = "<|/tool_call|>"

    def scan_calls(self, text: str, i: int) -> tuple[list[CallState], int | None]:
        calls, end = _scan_call_list(text, skip_ws(text, i), self.arg_keys)
        if end is None:
            return calls, None
        j = skip_ws(text, end)
        if text.startswith(self.close, j):
            return calls, j + len(self.close)
        if len(text) - j < len(self.close) and self.close.startswith(text[j:]) and j < len(text):
            return calls, None
        return calls, j


class MistralParser(ToolParser):
    """`[TOOL_CALLS]` followed by a JSON list/object, or by `name[ARGS]{...}` (v11+)."""

    name = "mistral"
    markers = ("[TOOL_CALLS]",)
    bare = "[{"

    def new_id(self) -> str:
        # Mistral's chat template rejects ids that are not exactly 9 alphanumerics.
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))

    def scan_calls(self, text: str, i: int) -> tuple[list[CallState], int | None]:
        calls: list[CallState] = []
        while True:
            j = skip_ws(text, i)
            if j >= len(text):
                return calls, None
            if text[j] in "[{":
                more, end = _scan_call_list(text, j, self.arg_keys)
            else:
                more, end = self._scan_named(text, j)
            calls.extend(more)
            if end is None:
                return calls, None
            j = skip_ws(text, end)
            if text.startswith(self.markers[0], j):
                i = j + len(self.markers[0])
                continue
            if j < len(text) and self.markers[0].startswith(text[j:]):
                return calls, None
            return calls, j

    def _scan_named(self, text: str, i: int) -> tuple[list[CallState], int | None]:
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


class Llama3Parser(ToolParser):
    """A reply that *is* `{"name": ..., "parameters": ...}` (maybe `<|python_tag|>`-led, `;`-joined)."""

    name = "llama3"
    markers = ("<|python_tag|>",)
    arg_keys = ("parameters", "arguments")

    def region_start(self, text: str) -> tuple[int, int] | None:
        j = skip_ws(text, 0)
        if text.startswith(self.markers[0], j):
            return j, j + len(self.markers[0])
        if text[j : j + 1] == "{":
            return j, j
        return None

    def content_hold(self, text: str) -> int:
        stripped = text.lstrip()
        if not stripped or self.markers[0].startswith(stripped):
            return len(text)  # the reply may still turn out to be a call
        return 0

    def scan_calls(self, text: str, i: int) -> tuple[list[CallState], int | None]:
        calls: list[CallState] = []
        while True:
            j = skip_ws(text, i)
            if j >= len(text):
                return calls, None
            call, end = _call_from_object(text, j, self.arg_keys)
            calls.append(call)
            if end is None:
                return calls, None
            j = skip_ws(text, end)
            if text.startswith(";", j):
                i = j + 1
                continue
            return calls, j


def _scan_call_list(
    text: str, i: int, arg_keys: tuple[str, ...]
) -> tuple[list[CallState], int | None]:
    """A JSON list of call objects (or one bare object) starting at `i`."""
    if i >= len(text):
        return [], None
    if text[i] == "{":
        call, end = _call_from_object(text, i, arg_keys)
        return [call], end
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


@dataclass(frozen=True)
class ToolSyntax:
    """How one family wraps a forced call: `open` + body + `close`, body one object or a list."""

    open: str
    close: str
    arg_key: str = "arguments"
    as_list: bool = False


_TAGGED = ToolSyntax("<tool_call>\n", "\n</tool_call>")


@dataclass(frozen=True)
class ToolFormat:
    """Everything the runtime knows about one family's tool calls, in one row: the parser that
    reads them, the syntax a forced call is generated in (grammar.py), and the model families
    (config.json `model_type`) that write it when a manifest predates `tool_parser`."""

    parser: type[ToolParser]
    syntax: ToolSyntax
    families: tuple[str, ...] = ()


FORMATS: dict[str, ToolFormat] = {
    "none": ToolFormat(ToolParser, _TAGGED),  # parsed by nobody: qwen's syntax is a guess
    "qwen": ToolFormat(QwenParser, _TAGGED, families=("qwen2", "qwen3")),
    "hermes": ToolFormat(QwenParser, _TAGGED),
    "mistral": ToolFormat(
        MistralParser, ToolSyntax("[TOOL_CALLS]", "", as_list=True), families=("mistral",)
    ),
    "llama3": ToolFormat(
        Llama3Parser, ToolSyntax("", "", arg_key="parameters"), families=("llama",)
    ),
    "phi4": ToolFormat(Phi4Parser, ToolSyntax("<|tool_call|>", "<|/tool_call|>", as_list=True)),
}
PARSERS: dict[str, type[ToolParser]] = {name: f.parser for name, f in FORMATS.items()}


def tool_format(name: str | None) -> ToolFormat:
    """The format a manifest names (`metadata["tool_parser"]`); unknown or None -> "none"."""
    return FORMATS.get(name or "none", FORMATS["none"])


def family_format(family: str | None) -> str | None:
    """The format name a model family usually writes (None: no known tool syntax)."""
    return next((n for n, f in FORMATS.items() if family and family in f.families), None)


def get_parser(name: str | None) -> ToolParser:
    """The parser a manifest names (`metadata["tool_parser"]`); unknown or None -> no tool syntax."""
    return tool_format(name).parser()


def split_reasoning(text: str, *, in_reasoning: bool, final: bool) -> tuple[str | None, str]:
    """(reasoning so far, the rest). Holds back text that may still be a think tag."""
    lead = len(text) - len(text.lstrip())
    if not in_reasoning:
        head = text[lead:]
        if not head.startswith(THINK_OPEN):
            if not final and head and THINK_OPEN.startswith(head):
                return None, ""
            return None, text
        text, lead = head[len(THINK_OPEN) :], 0
    close = text.find(THINK_CLOSE)
    if close < 0:
        hold = 0 if final else _held_prefix(text, (THINK_CLOSE,))
        return text[: len(text) - hold], ""
    return text[:close], text[close + len(THINK_CLOSE) :].lstrip()


def _grown(text: str, shown: int) -> tuple[str, int]:
    """The part of `text.strip()` not shown yet. Trailing whitespace waits for what follows,
    so a stream's concatenation equals the stripped non-streaming text."""
    visible = text.strip()
    return visible[shown:], max(shown, len(visible))


def parse(text: str, parser: ToolParser, *, in_reasoning: bool = False) -> ParsedOutput:
    """A finished reply -> content, tool calls (with fresh ids) and reasoning. Never raises."""
    reasoning, rest = split_reasoning(text, in_reasoning=in_reasoning, final=True)
    reasoning = reasoning.strip() if reasoning is not None else None
    try:
        scan = parser.scan(rest, final=True)
    except (Malformed, ValueError):
        return ParsedOutput(rest.strip() or None, [], reasoning or None)
    calls = [ToolCall(parser.new_id(), c.name or "", c.arguments) for c in scan.calls]
    return ParsedOutput(scan.content.strip() or None, calls, reasoning or None)


class StreamParser:
    """Feed text as it is generated; get OpenAI-shaped deltas back.

    Each feed rescans the whole reply so far (replies are short, and the scan is
    linear), then emits only what grew since the last feed. A call's id and name
    come in one delta, then its argument text in fragments. If the tool syntax
    turns out malformed, what has not been shown yet comes out as content.
    """

    def __init__(self, parser: ToolParser, *, in_reasoning: bool = False):
        self.parser = parser
        self.in_reasoning = in_reasoning
        self.text = ""
        self.shown_reasoning = 0
        self.shown_content = 0
        self.calls: list[tuple[str, str, int]] = []  # (id, name, argument characters shown)
        self.broken_at: int | None = None  # content length when the tool syntax broke

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.calls)

    def feed(self, piece: str, *, final: bool = False) -> list[Delta]:
        self.text += piece
        reasoning, rest = split_reasoning(self.text, in_reasoning=self.in_reasoning, final=final)
        deltas: list[Delta] = []
        if reasoning is not None:
            new, self.shown_reasoning = _grown(reasoning, self.shown_reasoning)
            if new:
                deltas.append(Delta(reasoning=new))
        deltas.extend(self._feed_rest(rest, final))
        return deltas

    def finish(self) -> list[Delta]:
        """Flush what was held back (a possible marker prefix, trailing whitespace)."""
        return self.feed("", final=True)

    def _feed_rest(self, rest: str, final: bool) -> list[Delta]:
        if self.broken_at is not None:
            return self._content_delta(rest[self.broken_at :])
        try:
            scan = self.parser.scan(rest, final=final)
        except (Malformed, ValueError):
            if not self.calls:
                return self._content_delta(rest)
            # Calls already shown stay shown; only what follows the break is content.
            self.broken_at, self.shown_content = len(rest), 0
            return []
        deltas = self._content_delta(scan.content)
        for index, call in enumerate(scan.calls):
            deltas.extend(self._call_deltas(index, call))
        return deltas

    def _content_delta(self, content: str) -> list[Delta]:
        new, self.shown_content = _grown(content, self.shown_content)
        return [Delta(content=new)] if new else []

    def _call_deltas(self, index: int, call: CallState) -> list[Delta]:
        if call.name is None:
            return []
        deltas: list[Delta] = []
        if index >= len(self.calls):
            self.calls.append((self.parser.new_id(), call.name, 0))
            call_id = self.calls[index][0]
            deltas.append(Delta(index=index, id=call_id, name=call.name, arguments=""))
        call_id, name, shown = self.calls[index]
        if len(call.arguments) > shown:
            deltas.append(Delta(index=index, arguments=call.arguments[shown:]))
            self.calls[index] = (call_id, name, len(call.arguments))
        return deltas
