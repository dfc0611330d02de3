"""Reading a reply: model text -> (content, tool calls, reasoning), finished or streamed.

`<think>...</think>` (DeepSeek-R1, Qwen3) is split off as reasoning first, whatever the
family's `ToolFormat` (formats.py). Malformed output is returned as plain content; nothing
here raises on model text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.tools.formats import CallState, ToolFormat, held_prefix

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "Delta",
    "ParsedOutput",
    "StreamParser",
    "ToolCall",
    "parse",
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


def split_reasoning(text: str, *, in_reasoning: bool, final: bool) -> tuple[str | None, str]:
    """(reasoning so far, the rest). Holds back text that may still be a think tag."""
    if not in_reasoning:
        head = text.lstrip()
        if not head.startswith(THINK_OPEN):
            if not final and head and THINK_OPEN.startswith(head):
                return None, ""
            return None, text
        text = head[len(THINK_OPEN) :]
    close = text.find(THINK_CLOSE)
    if close < 0:
        hold = 0 if final else held_prefix(text, (THINK_CLOSE,))
        return text[: len(text) - hold], ""
    return text[:close], text[close + len(THINK_CLOSE) :].lstrip()


def _grown(text: str, shown: int) -> tuple[str, int]:
    """The part of `text.strip()` not shown yet. Trailing whitespace waits for what follows,
    so a stream's concatenation equals the stripped non-streaming text."""
    visible = text.strip()
    return visible[shown:], max(shown, len(visible))


def parse(text: str, syntax: ToolFormat, *, in_reasoning: bool = False) -> ParsedOutput:
    """A finished reply -> content, tool calls (with fresh ids) and reasoning. Never raises."""
    reasoning, rest = split_reasoning(text, in_reasoning=in_reasoning, final=True)
    reasoning = reasoning.strip() if reasoning is not None else None
    try:
        scan = syntax.scan(rest, final=True)
    except ValueError:  # jsonscan.Malformed, or a call's arguments that json.loads refused
        return ParsedOutput(rest.strip() or None, [], reasoning or None)
    calls = [ToolCall(syntax.new_id(), c.name or "", c.arguments) for c in scan.calls]
    return ParsedOutput(scan.content.strip() or None, calls, reasoning or None)


class StreamParser:
    """Feed text as it is generated; get OpenAI-shaped deltas back: a call's id and name in
    one delta, then argument fragments whose concatenation is the final `arguments`.

    Each feed rescans the whole reply so far (replies are short, the scan is linear) and
    emits only what grew. If the tool syntax breaks, what was not shown comes out as content.
    """

    def __init__(self, syntax: ToolFormat, *, in_reasoning: bool = False):
        self.syntax = syntax
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
        if not piece and not final:
            return []
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
            scan = self.syntax.scan(rest, final=final)
        except ValueError:
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
            self.calls.append((self.syntax.new_id(), call.name, 0))
            deltas.append(Delta(index=index, id=self.calls[index][0], name=call.name, arguments=""))
        call_id, name, shown = self.calls[index]
        if len(call.arguments) > shown:
            deltas.append(Delta(index=index, arguments=call.arguments[shown:]))
            self.calls[index] = (call_id, name, len(call.arguments))
        return deltas
