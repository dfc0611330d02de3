"""What comes back from a turn, the same for every API: typed reply events per choice.

A reply is pieces (content, reasoning, or a fragment of a tool call) then one `Finished`;
`Reply` is one choice drained. `ReplyReader` turns an engine stream into those events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.engines.base import Chunk
from runtime.tools.formats import ToolFormat
from runtime.tools.parsers import Delta, ParsedOutput, StreamParser, parse

if TYPE_CHECKING:
    from runtime.engines.protocol import TokenStream

__all__ = [
    "UNFINISHED",
    "Finished",
    "Piece",
    "Pieces",
    "PrefetchedStream",
    "Reply",
    "ReplyEvent",
    "ReplyReader",
    "Usage",
    "arguments_object",
    "matched_stop",
    "merge",
]

Piece = Delta  # content | reasoning | a fragment of tool call `index` (runtime/tools/parsers)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class Finished:
    """The end of one choice: the engine's reason, usage, the stop string that matched."""

    reason: str | None
    usage: Usage
    tool_calls: bool = False
    matched_stop: str | None = None

    @property
    def finish_reason(self) -> str | None:
        """OpenAI's finish_reason: "tool_calls" when a reply that ended normally called tools."""
        return "tool_calls" if self.tool_calls and self.reason == "stop" else self.reason


ReplyEvent = Piece | Finished

# What a choice ends with when its stream stopped before the engine said why.
UNFINISHED = Finished(None, Usage())


class Pieces:
    """One choice's pieces; `finished` holds its Finished once they are read (UNFINISHED
    until then), so an API loops over pieces and reads the end after the loop."""

    def __init__(self, events: AsyncIterator[ReplyEvent]) -> None:
        self._events = events
        self.finished = UNFINISHED

    async def __aiter__(self) -> AsyncIterator[Piece]:
        async for event in self._events:
            if isinstance(event, Finished):
                self.finished = event
            else:
                yield event


@dataclass(frozen=True)
class Reply:
    """One choice, drained: the raw text, read into content/reasoning/tool calls."""

    text: str
    parsed: ParsedOutput
    finished: Finished


def matched_stop(raw_text: str, finish_reason: str | None, stops: list[str] | None) -> str | None:
    """Which stop sequence ended a reply, from the raw decoded tokens (stop text included).

    The engine cuts at the earliest stop string and reports only "stop", which EOS also
    reports; the earliest stop in the raw text (the shortest on a tie, as it completes
    first) is the one that matched, and no stop in it means the model ended the turn.
    """
    if finish_reason != "stop" or not stops:
        return None
    found = [(raw_text.find(s), len(s), s) for s in stops if s and s in raw_text]
    return min(found)[2] if found else None


def arguments_object(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as an object (Anthropic's `input`, Ollama's `arguments`):
    text that is not JSON is `{}`, a JSON value other than an object `{"value": ...}`."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


class PrefetchedStream:
    """An engine stream whose first chunk was awaited before the response started."""

    def __init__(self, stream: TokenStream, first: Chunk | None):
        self._stream = stream
        self._first = first

    def __aiter__(self) -> PrefetchedStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        await self._stream.aclose()


@dataclass(frozen=True)
class ReplyReader:
    """How one turn's replies read: through runtime/tools in `syntax` (tools, or a template
    that thinks; `in_reasoning` when the prompt opened `<think>`), or as plain text; `stops`
    and `decode` name the stop string that ended a reply."""

    syntax: ToolFormat
    in_reasoning: bool
    reading: bool
    stops: list[str]
    decode: Callable[[list[int]], str]

    def finished(self, last: Chunk, reason: str | None, ids: list[int], calls: bool) -> Finished:
        raw = self.decode(ids) if self.stops and reason == "stop" else ""  # only to name a stop
        usage = Usage(last.prompt_tokens, last.completion_tokens, last.cached_tokens)
        return Finished(reason, usage, calls, matched_stop(raw, reason, self.stops))

    async def events(self, stream: PrefetchedStream) -> AsyncGenerator[ReplyEvent, None]:
        """Pieces as the chunks come, then one Finished; closing it cancels the sequence."""
        parser = StreamParser(self.syntax, in_reasoning=self.in_reasoning) if self.reading else None
        last = Chunk()
        ids: list[int] = []
        try:
            async for chunk in stream:
                last = chunk
                ids.extend(chunk.token_ids)
                if parser is None:
                    if chunk.text:
                        yield Piece(content=chunk.text)
                    continue
                for piece in parser.feed(chunk.text):
                    yield piece
                if chunk.finish_reason:
                    for piece in parser.finish():
                        yield piece
        finally:
            await stream.aclose()
        calls = parser.has_tool_calls if parser is not None else False
        yield self.finished(last, last.finish_reason, ids, calls)

    async def drain(self, stream: PrefetchedStream) -> Reply:
        """The whole reply, parsed once it is complete (non-streaming answers)."""
        parts: list[str] = []
        last = Chunk()
        ids: list[int] = []
        async for chunk in stream:
            parts.append(chunk.text)
            ids.extend(chunk.token_ids)
            last = chunk
        text = "".join(parts)
        parsed = (
            parse(text, self.syntax, in_reasoning=self.in_reasoning)
            if self.reading
            else ParsedOutput(content=text)
        )
        finished = self.finished(last, last.finish_reason or "stop", ids, bool(parsed.tool_calls))
        return Reply(text, parsed, finished)


async def merge(
    iterators: list[AsyncGenerator[ReplyEvent, None]],
) -> AsyncIterator[tuple[int, ReplyEvent]]:
    """Events of several choices as they come, tagged with the choice's index; leaving
    (disconnect, aclose) closes every choice, which cancels its sequence."""
    if len(iterators) == 1:
        async for event in iterators[0]:
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, ReplyEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, iterator: AsyncIterator[ReplyEvent]) -> None:
        try:
            async for event in iterator:
                await queue.put((index, event))
            await queue.put((index, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, it)) for i, it in enumerate(iterators)]
    try:
        remaining = len(iterators)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for iterator in iterators:
            await iterator.aclose()
