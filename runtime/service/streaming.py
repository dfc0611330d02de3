"""The one generation path every API route shares, and SSE framing.

`start_generation` does everything that can fail before the first byte (name, load,
task, template, prompt length, queue admission, the first engine step) and returns
`Generation`: n streams whose first chunk is already in hand. API layers (OpenAI chat
and completions here; Responses, Anthropic, Ollama later) only translate its chunks.
`merge` interleaves n streams; `collect` drains one; `sse_events` frames an event
iterator as SSE and turns a failure after the first byte into `data: {"error": ...}`
then `data: [DONE]` (vLLM). Leaving any of them (disconnect, aclose) cancels generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.engines.base import Chunk, GenerationParams
from runtime.errors import FoundryError, InvalidRequest
from runtime.service.error_responses import error_body

if TYPE_CHECKING:
    from runtime.manager import ModelManager

__all__ = [
    "Collected",
    "Generation",
    "PrefetchedStream",
    "collect",
    "merge",
    "sse_events",
    "start_generation",
]

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


class PrefetchedStream:
    """A GenerationStream whose first chunk was awaited before the response started."""

    def __init__(self, stream: Any, first: Chunk | None):
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


@dataclass
class Generation:
    model_id: str
    prompt_tokens: int
    streams: list[PrefetchedStream]

    async def aclose(self) -> None:
        for stream in self.streams:
            await stream.aclose()


async def start_generation(
    manager: ModelManager,
    model: str,
    params: GenerationParams,
    *,
    messages: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
    prompt: str | list[int] | None = None,
    n: int = 1,
) -> Generation:
    """Resolve, load, render, encode, submit `n` sequences and await each one's first chunk.

    Give `messages` (rendered with the model's chat template, `tools` passed to it) or a raw
    `prompt` (text, or token ids). With a seed and n > 1, choice i uses seed + i.

    Raises:
        FoundryError leaves: ModelNotFound, UnsupportedTask, InvalidMessages, ContextTooLong,
        QueueFull, InvalidRequest (guidance refused), GenerationFailed.
    """
    engine = await manager.get(model, task="chat")
    vocab_size = int(getattr(engine, "vocab_size", 0) or 0)
    if params.top_k and vocab_size and params.top_k > vocab_size:
        raise InvalidRequest(  # onnxruntime-genai fails the request (a 500) past the vocabulary
            f"top_k {params.top_k} is above model {model!r}'s vocabulary of {vocab_size} tokens",
            param="top_k",
        )
    if messages is not None:
        text = engine.render_prompt(messages, tools)
        prompt_ids = engine.encode(text)
    elif isinstance(prompt, str):
        prompt_ids = engine.encode(prompt, add_special_tokens=True)
    else:
        prompt_ids = list(prompt or [])
    streams: list[Any] = []
    try:
        for i in range(n):
            seeded = (
                params
                if params.seed is None or i == 0
                else msgspec.structs.replace(params, seed=(params.seed + i) % (2**31))
            )
            streams.append(engine.stream(prompt_ids, seeded))
        firsts = await asyncio.gather(*(_first(s) for s in streams))
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    return Generation(
        engine.model_id,
        len(prompt_ids),
        [PrefetchedStream(s, f) for s, f in zip(streams, firsts, strict=True)],
    )


async def _first(stream: Any) -> Chunk | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


@dataclass
class Collected:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    token_ids: list[int]


async def collect(stream: PrefetchedStream) -> Collected:
    """Drain one stream into its full text and usage (non-streaming responses)."""
    parts: list[str] = []
    ids: list[int] = []
    last = Chunk()
    try:
        async for chunk in stream:
            parts.append(chunk.text)
            ids.extend(chunk.token_ids)
            last = chunk
    finally:
        await stream.aclose()
    return Collected(
        "".join(parts),
        last.finish_reason or "stop",
        last.prompt_tokens,
        last.completion_tokens,
        last.cached_tokens,
        ids,
    )


async def merge(streams: list[PrefetchedStream]) -> AsyncIterator[tuple[int, Chunk]]:
    """Chunks of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for chunk in streams[0]:
            yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: PrefetchedStream) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
            await queue.put((index, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
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
        for stream in streams:
            await stream.aclose()


def sse(payload: Any) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


async def sse_events(events: AsyncIterator[Any], generation: Generation) -> AsyncIterator[bytes]:
    """Frame payloads as SSE, end with [DONE]; errors after the first byte go in-stream."""
    try:
        async for payload in events:
            yield sse(payload)
    except FoundryError as exc:
        yield sse(error_body(exc))
    except Exception as exc:
        log.exception("stream failed")
        yield sse(error_body(exc))
    finally:
        with contextlib.suppress(Exception):
            await generation.aclose()
    yield DONE
