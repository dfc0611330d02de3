"""Ollama's API under `/api`: chat, generate, embed(dings), and the model routes' Router.

A thin layer over the shared seam (`turn.py`): decode a `wire.py` Struct, `to_turn`,
`open_turn`, answer NDJSON lines (Ollama streams by default) or one JSON object. Errors render
as Ollama's `{"error": "..."}` (errors.py), after the first line as an error line, which the
`ollama` package raises. `keep_alive` sets the model's idle TTL; `0` unloads when done.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Router, post
from litestar.response import Response, Stream

from runtime.errors import FoundryError, InvalidRequest
from runtime.manager import ModelManager
from runtime.service.apis.ollama import wire
from runtime.service.apis.ollama.models import MODEL_HANDLERS, error_line
from runtime.service.openapi import streamed
from runtime.service.replies import Finished
from runtime.service.transport import NDJSON, WireBody, framed, ndjson, whole
from runtime.service.turn import OpenTurn, open_turn
from runtime.tools.parsers import ToolCall

__all__ = ["ROUTES"]

log = logging.getLogger(__name__)


# --- generation -------------------------------------------------------------------------------
def _stats(turn: OpenTurn, finished: Finished) -> dict[str, Any]:
    """The last line's `done`, `done_reason` and counters: load, prompt (to the first chunk)
    and eval durations, in nanoseconds."""
    end = time.perf_counter()
    return {
        "done": True,
        "done_reason": "length" if finished.reason == "length" else "stop",
        "total_duration": int((end - turn.started_at) * 1e9),
        "load_duration": int((turn.loaded_at - turn.started_at) * 1e9),
        "prompt_eval_count": finished.usage.prompt_tokens,
        "prompt_eval_duration": int((turn.first_at - turn.loaded_at) * 1e9),
        "eval_count": finished.usage.completion_tokens,
        "eval_duration": int((end - turn.first_at) * 1e9),
    }


async def _apply_keep_alive(manager: ModelManager, name: str, keep_alive: float | None) -> None:
    """A positive keep_alive becomes the model's idle TTL (a negative TTL never expires);
    0 is handled once the request is done (`_release`)."""
    if keep_alive is None or keep_alive == 0:
        return
    await manager.load(name, ttl=-1.0 if math.isinf(keep_alive) else keep_alive)


async def _release(manager: ModelManager, name: str, keep_alive: float | None) -> None:
    """keep_alive 0: unload now that the request is done (a busy model stays; it is logged)."""
    if keep_alive != 0:
        return
    try:
        await manager.unload(name)
    except FoundryError as exc:
        log.info("keep_alive 0: %s stays loaded: %s", name, exc.message)


async def _lines(turn: OpenTurn, name: str, shape: Any) -> AsyncIterator[Any]:
    """NDJSON: one line per piece of text (or of thinking), the tool calls whole in one line
    once the reply ends (as Ollama sends them), then `done: true` with the counters."""
    calls: dict[int, ToolCall] = {}
    pieces = turn.pieces()
    async for piece in pieces:
        if piece.index is not None:
            call = calls.setdefault(piece.index, ToolCall("", piece.name or "", ""))
            call.arguments += piece.arguments or ""
        elif piece.reasoning:
            yield shape(name, thinking=piece.reasoning)
        elif piece.content:
            yield shape(name, piece.content)
    if calls:
        yield shape(name, tool_calls=wire.ollama_tool_calls(list(calls.values())))
    yield shape(name, **_stats(turn, pieces.finished))


async def _respond(
    manager: ModelManager, body: wire.ChatRequest | wire.GenerateRequest, shape: Any
) -> Any:
    turn_request = wire.to_turn(body)
    name = turn_request.model
    keep_alive = wire.parse_keep_alive(body.keep_alive)
    turn = await open_turn(manager, turn_request)
    try:
        await _apply_keep_alive(manager, name, keep_alive)
    except BaseException:
        await turn.aclose()
        raise

    async def close() -> None:
        await turn.aclose()
        await _release(manager, name, keep_alive)

    if body.stream:
        lines = framed(_lines(turn, name, shape), ndjson, error_line, close=close)
        return Stream(lines, media_type=NDJSON)
    try:
        (reply,) = await turn.collect()
    finally:
        await _release(manager, name, keep_alive)
    return whole(shape(name, **wire.reply_fields(reply.parsed), **_stats(turn, reply.finished)))


@post("/chat", status_code=200, **streamed(wire.ChatLine, NDJSON, "the reply"))
async def chat(data: wire.ChatRequest, manager: ModelManager) -> Any:
    if not data.messages:  # Ollama: no messages = load the model (and keep_alive 0 = unload)
        return await _load_only(manager, data, wire.chat_line)
    return await _respond(manager, data, wire.chat_line)


@post("/generate", status_code=200, **streamed(wire.GenerateLine, NDJSON, "the reply"))
async def generate(data: wire.GenerateRequest, manager: ModelManager) -> Any:
    if not data.prompt:
        return await _load_only(manager, data, wire.generate_line)
    if data.raw:
        raise InvalidRequest(
            "raw prompts are not supported; send the prompt without raw", param="raw"
        )
    return await _respond(manager, data, wire.generate_line)


async def _load_only(manager: ModelManager, body: Any, shape: Any) -> Response[Any]:
    """Ollama's load/unload idiom: an empty prompt loads; with keep_alive 0 it unloads."""
    name = wire.model_name(body.model)
    keep_alive = wire.parse_keep_alive(body.keep_alive)
    if keep_alive == 0:
        await manager.unload(name)  # False (nothing to do) when it is not resident
        reason = "unload"
    else:
        await manager.chat(name)
        await _apply_keep_alive(manager, name, keep_alive)
        reason = "load"
    return whole(shape(name, done=True, done_reason=reason))


# --- embeddings ---------------------------------------------------------------------------
async def _embed(manager: ModelManager, data: wire.EmbedRequest) -> wire.Embed:
    """`load_duration` is the time spent getting the model: its load when it was not resident."""
    start = time.perf_counter()
    name = wire.model_name(data.model)
    engine = await manager.embeddings(name)
    loaded = time.perf_counter()
    await _apply_keep_alive(manager, name, wire.parse_keep_alive(data.keep_alive))
    result = await engine.aembed([data.input] if isinstance(data.input, str) else list(data.input))
    return wire.Embed(
        model=data.model,
        embeddings=[[float(x) for x in row] for row in result.vectors],
        total_duration=int((time.perf_counter() - start) * 1e9),
        load_duration=int((loaded - start) * 1e9),
        prompt_eval_count=int(result.prompt_tokens),
    )


@post("/embed", status_code=200, dto=WireBody, return_dto=None)
async def embed(data: wire.EmbedRequest, manager: ModelManager) -> wire.Embed:
    return await _embed(manager, data)


@post("/embeddings", status_code=200, dto=WireBody, return_dto=None)
async def embeddings(data: wire.EmbeddingsRequest, manager: ModelManager) -> wire.Embedding:
    """The older single-prompt form."""
    body = wire.EmbedRequest(model=data.model, input=data.prompt, keep_alive=data.keep_alive)
    return wire.Embedding((await _embed(manager, body)).embeddings[0])


ROUTES = [
    Router(
        path="/api",
        route_handlers=[chat, generate, embed, embeddings, *MODEL_HANDLERS],
    )
]
