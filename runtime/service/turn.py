"""The one generation path every client API shares: a typed `Turn` in, reply events out.

Each API converts its request into a `Turn` with a pure `to_turn` (its `wire.py`);
`open_turn` does, once, everything that can fail before the first byte, so a bad name, a
missing model, a too-long prompt or a full queue is a real 4xx status, never an in-stream
error. APIs only shape the typed events (`replies.py`) into their wire objects.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.engines.base import GenerationParams
from runtime.errors import ContextTooLong, InvalidRequest
from runtime.service.replies import Pieces, PrefetchedStream, Reply, ReplyEvent, ReplyReader, merge
from runtime.tools.calls import NO_TOOLS, plan_tools, prepare_messages, starts_in_reasoning

if TYPE_CHECKING:
    from runtime.engines.protocol import ChatEngineProtocol, TokenStream
    from runtime.manager import ModelManager

__all__ = [
    "OPEN_ENDED_MAX_TOKENS",
    "ContextLimit",
    "OpenTurn",
    "Prepared",
    "Turn",
    "chat_call",
    "given",
    "new_id",
    "open_ended_max_tokens",
    "open_turn",
    "prepare_turn",
]

# APIs whose own default is "until the context is full" (Responses without max_output_tokens,
# Ollama without num_predict or with -1/-2) stop here instead: a fuzz run's default Responses
# call on a 32k-context model generated 32,703 tokens (182 s) and reserved KV for all of them.
OPEN_ENDED_MAX_TOKENS = 4096


@dataclass(frozen=True)
class ContextLimit:
    """A client's own, smaller context (Ollama's `num_ctx`); None tokens: the model's."""

    tokens: int | None
    param: str
    name: str


@dataclass(frozen=True)
class Turn:
    """One request to generate, in no API's shape.

    Either `messages` (chat form, rendered with the model's template and `tools`, which are
    in OpenAI's chat shape with `tool_choice` in its vocabulary) or raw `prompts` (text or
    token ids, no template; `n` sequences each). `open_ended`: the length is
    `open_ended_max_tokens(max_tokens, room)` (None: not asked), not `params.max_tokens`.
    """

    model: str
    params: GenerationParams
    messages: list[dict[str, Any]] | None = None
    prompts: list[str | list[int]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    n: int = 1
    open_ended: bool = False
    max_tokens: int | None = None
    limit: ContextLimit | None = None


def given(source: Any, *names: str) -> dict[str, Any]:
    """Those of the fields `names` that `source` was sent with (None: not sent)."""
    return {name: value for name in names if (value := getattr(source, name)) is not None}


def new_id(prefix: str, length: int = 32) -> str:
    """A fresh object id as an API spells it: `prefix` then `length` hex digits."""
    return prefix + uuid.uuid4().hex[:length]


def chat_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """One tool call in the chat form of `Turn.messages` (OpenAI chat's shape)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass
class Prepared:
    """A turn planned and rendered on its engine, not yet submitted."""

    engine: ChatEngineProtocol
    params: GenerationParams
    prompt_ids: list[list[int]]  # one per prompt
    reader: ReplyReader  # reader.reading: replies go through runtime/tools
    loaded_at: float = 0.0  # time.perf_counter() once the engine was in hand


async def prepare_turn(manager: ModelManager, turn: Turn) -> Prepared:
    """Resolve and load once, plan tools, render and encode once, fit the context.

    Raises:
        ModelNotFound, UnsupportedTask, InvalidRequest (tools, top_k), InvalidMessages,
        ContextTooLong (past a client's own limit).
    """
    engine = await manager.chat(turn.model)
    loaded_at = time.perf_counter()
    _check_top_k(engine, turn)
    params = turn.params
    if turn.messages is not None:
        plan = plan_tools(
            turn.tools, turn.tool_choice, metadata=engine.metadata, artifact=engine.path
        )
        if plan.guidance is not None:  # a forced call outranks a response format
            params = msgspec.structs.replace(params, guidance=plan.guidance)
        prompt = engine.render_prompt(prepare_messages(turn.messages), plan.template_tools)
        prompt_ids = [engine.encode(prompt)]
        reading = plan.template_tools is not None or bool(engine.metadata.thinks)
    else:
        plan, prompt, reading = NO_TOOLS, "", False
        prompt_ids = [
            engine.encode(p, add_special_tokens=True) if isinstance(p, str) else list(p)
            for p in turn.prompts or []
        ]
    params = _fit(engine, turn, params, max(len(ids) for ids in prompt_ids))
    reader = ReplyReader(
        plan.format, starts_in_reasoning(prompt), reading, params.stop, engine.decode
    )
    return Prepared(engine, params, prompt_ids, reader, loaded_at)


def _check_top_k(engine: ChatEngineProtocol, turn: Turn) -> None:
    vocab_size = engine.vocab_size
    top_k = turn.params.top_k
    if top_k and vocab_size and top_k > vocab_size:
        raise InvalidRequest(  # onnxruntime-genai fails the request (a 500) past the vocabulary
            f"top_k {top_k} is above model {turn.model!r}'s vocabulary of {vocab_size} tokens",
            param="top_k",
        )


def _fit(
    engine: ChatEngineProtocol, turn: Turn, params: GenerationParams, longest: int
) -> GenerationParams:
    """A client's own context limit, and an open-ended length capped to the room left."""
    context = engine.context_length
    room = context
    if turn.limit is not None:
        limit = turn.limit
        if limit.tokens is not None and limit.tokens > context:
            raise InvalidRequest(
                f"{limit.name} {limit.tokens} is above model {turn.model!r}'s context of "
                f"{context} tokens",
                param=limit.param,
            )
        room = limit.tokens or context
        if longest >= room:
            raise ContextTooLong(
                f"prompt is {longest} tokens; {limit.name} is {room}", param=limit.param
            )
        room -= longest
    if turn.open_ended:
        return msgspec.structs.replace(
            params, max_tokens=open_ended_max_tokens(turn.max_tokens, room)
        )
    return params


def open_ended_max_tokens(requested: int | None, room: int) -> int:
    """max_tokens for an API whose own default is "until the context is full": what was asked,
    else OPEN_ENDED_MAX_TOKENS, and never more than the `room` the context leaves."""
    return max(1, min(OPEN_ENDED_MAX_TOKENS if requested is None else requested, room))


async def open_turn(manager: ModelManager, turn: Turn) -> OpenTurn:
    """Prepare, submit `n` sequences per prompt and await each one's first chunk.

    With a seed and n > 1, choice i uses seed + i.

    Raises:
        everything `prepare_turn` raises, and the engine's admission errors (ContextTooLong,
        QueueFull, KvBudgetFull, GenerationFailed).
    """
    started = time.perf_counter()
    prepared = await prepare_turn(manager, turn)
    engine, params = prepared.engine, prepared.params
    streams: list[TokenStream] = []
    try:
        for ids in prepared.prompt_ids:
            for i in range(turn.n):
                seeded = (
                    params
                    if params.seed is None or i == 0
                    else msgspec.structs.replace(params, seed=(params.seed + i) % (2**31))
                )
                streams.append(engine.stream(ids, seeded))
        firsts = await asyncio.gather(*(anext(s, None) for s in streams))
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    return OpenTurn(
        prepared=prepared,
        prompt_tokens=sum(len(ids) for ids in prepared.prompt_ids),
        streams=[PrefetchedStream(s, f) for s, f in zip(streams, firsts, strict=True)],
        started_at=started,
        first_at=time.perf_counter(),
    )


@dataclass
class OpenTurn:
    """A submitted turn: one stream per choice, first chunks in hand."""

    prepared: Prepared
    prompt_tokens: int  # the prompts, counted once however many choices
    streams: list[PrefetchedStream]
    started_at: float = 0.0  # time.perf_counter() marks (Ollama's durations)
    first_at: float = 0.0
    _closed: bool = field(default=False, repr=False)

    @property
    def loaded_at(self) -> float:
        return self.prepared.loaded_at

    def events(self, index: int = 0) -> AsyncGenerator[ReplyEvent, None]:
        """Choice `index` as pieces then one Finished (closing it cancels the sequence)."""
        return self.prepared.reader.events(self.streams[index])

    def pieces(self, index: int = 0) -> Pieces:
        """Choice `index`'s pieces, its Finished read after the loop (`Pieces.finished`)."""
        return Pieces(self.events(index))

    def merged(self) -> AsyncIterator[tuple[int, ReplyEvent]]:
        """Every choice's events as they come, tagged with the choice's index."""
        return merge([self.events(i) for i in range(len(self.streams))])

    async def collect(self) -> list[Reply]:
        """Drain every choice (non-streaming answers)."""
        reader = self.prepared.reader
        try:
            return list(await asyncio.gather(*(reader.drain(s) for s in self.streams)))
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Cancel whatever still runs (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for stream in self.streams:
            await stream.aclose()
