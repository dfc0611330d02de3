"""OpenAI routes: /v1/models, /v1/chat/completions, /v1/completions.

Thin controllers: `to_turn` the request, `open_turn` it, shape the reply events as OpenAI's
objects. Chat streams in vLLM's order: a role chunk per choice, deltas, a finish chunk per
choice, an optional usage chunk, `data: [DONE]`.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from litestar import Response, get, post
from litestar.response import Stream

from runtime.errors import ModelNotFound
from runtime.manager import ModelManager
from runtime.service.apis.openai import wire
from runtime.service.openapi import streamed
from runtime.service.replies import UNFINISHED, Finished
from runtime.service.transport import (
    DONE,
    SSE,
    framed,
    openai_sse_error,
    sse,
    sse_stream,
    whole,
)
from runtime.service.turn import OpenTurn, new_id, open_turn

if TYPE_CHECKING:
    from runtime.store import CachedModel

__all__ = ["ROUTES"]

_WHOLE = "the completion (chunks when `stream` is true)"


@get("/v1/models", sync_to_thread=False)
def list_models(manager: ModelManager) -> wire.ModelList:
    return wire.ModelList(data=[_model_object(m) for m in manager.available()])


@get("/v1/models/{model_id:path}", sync_to_thread=False)
def retrieve_model(model_id: str, manager: ModelManager) -> wire.ModelObject:
    model_id = model_id.lstrip("/")
    for cached in manager.available():
        if cached.model_id == model_id:
            return _model_object(cached)
    manager.resolve_name(model_id)  # raises ModelNotFound listing what exists (or an alias)
    raise ModelNotFound(f"model {model_id!r} is not in the cache", param="model")


@post("/v1/chat/completions", status_code=200, **streamed(wire.ChatCompletion, SSE, _WHOLE))
async def chat_completions(
    data: wire.ChatCompletionRequest, manager: ModelManager
) -> Response[Any]:
    turn = await open_turn(manager, data.to_turn())
    head = _head("chatcmpl", data.model)
    if data.stream:
        chunk = partial(wire.ChatCompletionChunk, **head)
        return _sse_stream(_chat_events(turn, chunk, data.include_usage), turn)
    replies = await turn.collect()
    choices = [wire.chat_choice(i, reply) for i, reply in enumerate(replies)]
    ends = [reply.finished for reply in replies]
    return whole(wire.ChatCompletion(**head, choices=choices, usage=_usage(turn, ends)))


def _head(prefix: str, model: str) -> dict[str, Any]:
    """What every object of one answer (the whole one, or each chunk) opens with."""
    return {"id": new_id(f"{prefix}-", 24), "created": int(time.time()), "model": model}


def _sse_stream(events: AsyncIterator[Any], turn: OpenTurn) -> Stream:
    return sse_stream(framed(events, sse, openai_sse_error, close=turn.aclose, done=DONE))


async def _chat_events(
    turn: OpenTurn, chunk: Callable[..., wire.ChatCompletionChunk], include_usage: bool
) -> AsyncIterator[wire.ChatCompletionChunk]:
    for index in range(len(turn.streams)):
        yield chunk(
            choices=[wire.ChunkChoice(index=index, delta=wire.Delta(role="assistant", content=""))]
        )
    ends = [UNFINISHED] * len(turn.streams)
    async for index, event in turn.merged():
        if isinstance(event, Finished):
            ends[index] = event
            if event.reason:
                finish = wire.ChunkChoice(
                    index=index, delta=wire.Delta(), finish_reason=event.finish_reason
                )
                yield chunk(choices=[finish])
            continue
        yield chunk(choices=[wire.ChunkChoice(index=index, delta=wire.chunk_delta(event))])
    if include_usage:
        yield chunk(choices=[], usage=_usage(turn, ends))


@post("/v1/completions", status_code=200, **streamed(wire.Completion, SSE, _WHOLE))
async def completions(data: wire.CompletionRequest, manager: ModelManager) -> Response[Any]:
    turn = await open_turn(manager, data.to_turn())
    head = _head("cmpl", data.model)
    echoes = [p if data.echo else "" for p in data.prompts() for _ in range(data.n)]
    if data.stream:
        chunk = partial(wire.Completion, **head)
        return _sse_stream(_completion_events(turn, echoes, chunk, data.include_usage), turn)
    replies = await turn.collect()
    choices = [
        wire.CompletionChoice(index=i, text=echoes[i] + r.text, finish_reason=r.finished.reason)
        for i, r in enumerate(replies)
    ]
    ends = [reply.finished for reply in replies]
    return whole(wire.Completion(**head, choices=choices, usage=_usage(turn, ends)))


async def _completion_events(
    turn: OpenTurn, echoes: list[str], chunk: Callable[..., wire.Completion], include_usage: bool
) -> AsyncIterator[wire.Completion]:
    def choice(index: int, text: str, reason: str | None = None) -> list[wire.CompletionChoice]:
        return [wire.CompletionChoice(index=index, text=text, finish_reason=reason)]

    for index, echo in enumerate(echoes):
        if echo:
            yield chunk(choices=choice(index, echo))
    completion_tokens = [0] * len(turn.streams)
    async for index, event in turn.merged():
        if isinstance(event, Finished):
            completion_tokens[index] = event.usage.completion_tokens
            if event.reason:
                yield chunk(choices=choice(index, "", event.reason))
        elif event.content:
            yield chunk(choices=choice(index, event.content))
    if include_usage:  # the stream's usage has never counted cached tokens
        yield chunk(choices=[], usage=wire.Usage.of(turn.prompt_tokens, sum(completion_tokens)))


def _usage(turn: OpenTurn, ends: list[Finished]) -> wire.Usage:
    """Usage as OpenAI counts it: the prompt once, however many choices."""
    return wire.Usage.of(
        turn.prompt_tokens,
        sum(end.usage.completion_tokens for end in ends),
        max((end.usage.cached_tokens for end in ends), default=0),
    )


def _model_object(cached: CachedModel) -> wire.ModelObject:
    info = cached.info
    facts = {
        "target": info.target,
        "precision": info.precision,
        "synthetic": info.synthetic,
        "quality": (info.validation or {}).get("quality"),
    }
    return wire.ModelObject(
        id=cached.model_id, created=_epoch(cached.manifest.created), task=info.task, metadata=facts
    )


def _epoch(stamp: str) -> int:
    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return 0


ROUTES: list[Any] = [list_models, retrieve_model, chat_completions, completions]
