"""Ollama's API under `/api`: chat, generate, embed(dings), and the model routes' Router.

A thin translation layer over the shared generation path (`streaming.start_generation`) and
the model manager: decode an `ollama_protocol` Struct, run, answer NDJSON lines (Ollama
streams by default) or one JSON object. Model names are this project's ids and aliases. Every error
under `/api` renders as Ollama's `{"error": "..."}` through this Router's exception handler;
after the first line a failure is an `{"error": ...}` line, which the `ollama` package raises.
`keep_alive` sets the model's idle TTL in the manager; `0` unloads once the request is done.
The model routes (tags, ps, show, pull, delete, version) live in `ollama_models.py`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import MediaType, Request, Router, post
from litestar.exceptions import HTTPException
from litestar.response import Response, Stream

from runtime.engines.base import Chunk, GenerationParams
from runtime.errors import ContextTooLong, FoundryError, InvalidRequest
from runtime.service.api_errors import error_status
from runtime.service.ollama_models import MODEL_HANDLERS
from runtime.service.ollama_protocol import (
    NDJSON,
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    chat_line,
    chat_to_chat,
    generate_line,
    generate_to_chat,
    model_name,
    ndjson_line,
    ollama_tool_calls,
    parse_keep_alive,
    reply_fields,
)
from runtime.service.protocol import decode_body, open_ended_max_tokens
from runtime.service.streaming import PrefetchedStream, collect, start_generation
from runtime.service.tool_turns import PlannedTurn, plan_turn
from runtime.tools.parsers import ToolCall

__all__ = ["ROUTES"]

log = logging.getLogger(__name__)


def ollama_error(_: Request, exc: Exception) -> Response[Any]:
    status, message, headers = error_status(exc)
    return Response({"error": message}, status_code=status, headers=headers)


def _json(value: dict) -> Response[Any]:
    """A whole (non-streamed) answer from a route whose default media type is NDJSON.

    Litestar gives a handler's `media_type` precedence over a Stream's own, so the
    streaming routes declare NDJSON and their one-object answers say JSON here.
    """
    return Response(value, media_type=MediaType.JSON)


def _manager(request: Request) -> Any:
    return request.app.state.manager


# --- generation -------------------------------------------------------------------------------
class _Timer:
    """Ollama's counters: load, prompt (to the first chunk) and eval durations."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.loaded = self.first = self.start

    def stats(self, chunk: Any) -> dict:
        end = time.perf_counter()
        return {
            "finish_reason": chunk.finish_reason,
            "prompt_tokens": chunk.prompt_tokens,
            "completion_tokens": chunk.completion_tokens,
            "total_seconds": end - self.start,
            "load_seconds": self.loaded - self.start,
            "prompt_seconds": self.first - self.loaded,
            "eval_seconds": end - self.first,
        }


async def _apply_keep_alive(request: Request, name: str, keep_alive: float | None) -> None:
    """A positive keep_alive becomes the model's idle TTL (a negative TTL never expires);
    0 is handled once the request is done (`_release`)."""
    if keep_alive is None or keep_alive == 0:
        return
    await _manager(request).load(name, ttl=-1.0 if math.isinf(keep_alive) else keep_alive)


async def _release(request: Request, name: str, keep_alive: float | None) -> None:
    """keep_alive 0: unload now that the request is done (a busy model stays; it is logged)."""
    if keep_alive != 0:
        return
    try:
        await _manager(request).unload(name)
    except FoundryError as exc:
        log.info("keep_alive 0: %s stays loaded: %s", name, exc.message)


async def _start(
    request: Request,
    name: str,
    messages: list[dict],
    params: dict,
    options: Any,
    keep_alive: float | None,
    timer: _Timer,
    tools: list[dict] | None = None,
    tool_choice: Any = None,
) -> tuple[PrefetchedStream, PlannedTurn]:
    """Load, fit the prompt in `num_ctx`, set the TTL, submit: every failure here is a real
    status (the first chunk is already in hand)."""
    manager = _manager(request)
    engine = await manager.get(name, task="chat")
    timer.loaded = time.perf_counter()
    num_ctx = options.num_ctx if options is not None else None
    if num_ctx is not None and num_ctx > engine.context_length:
        raise InvalidRequest(
            f"num_ctx {num_ctx} is above model {name!r}'s context of "
            f"{engine.context_length} tokens",
            param="options.num_ctx",
        )
    limit = num_ctx or engine.context_length
    turn = plan_turn(
        engine,
        msgspec.convert(params, GenerationParams),
        messages,
        tools=tools,
        tool_choice=tool_choice,
    )
    prompt = turn.prompt_ids
    if len(prompt) >= limit:
        raise ContextTooLong(
            f"prompt is {len(prompt)} tokens; num_ctx is {limit}", param="options.num_ctx"
        )
    # Ollama: no num_predict (or -1/-2) = until the context is full; capped here (protocol.py).
    max_tokens = open_ended_max_tokens(params.get("max_tokens"), limit - len(prompt))
    turn.params = msgspec.structs.replace(turn.params, max_tokens=max_tokens)
    await _apply_keep_alive(request, name, keep_alive)
    generation = await start_generation(manager, name, turn.params, prompt=prompt)
    timer.first = time.perf_counter()  # start_generation awaited the first token
    return generation.streams[0], turn


async def _lines(
    request: Request,
    stream: PrefetchedStream,
    name: str,
    keep_alive: float | None,
    shape: Any,
    timer: _Timer,
    turn: PlannedTurn,
) -> AsyncIterator[bytes]:
    """NDJSON: one line per chunk of text (or of thinking), the tool calls whole in one line
    once the reply ends (as Ollama sends them), then `done: true` with the counters."""
    last = None
    reader = turn.reader()
    calls: dict[int, ToolCall] = {}
    try:
        async for chunk in stream:
            last = chunk
            if reader is None:
                if chunk.text:
                    yield ndjson_line(shape(name, chunk.text))
                continue
            deltas = reader.feed(chunk.text) + (reader.finish() if chunk.finish_reason else [])
            for delta in deltas:
                if delta.index is not None:
                    call = calls.setdefault(delta.index, ToolCall("", delta.name or "", ""))
                    call.arguments += delta.arguments or ""
                elif delta.reasoning:
                    yield ndjson_line(shape(name, "", thinking=delta.reasoning))
                elif delta.content:
                    yield ndjson_line(shape(name, delta.content))
        if calls:
            yield ndjson_line(shape(name, "", tool_calls=ollama_tool_calls(list(calls.values()))))
    except Exception as exc:  # after the first byte, an error is a line
        yield ndjson_line({"error": error_status(exc)[1]})
        return
    finally:
        await stream.aclose()
        await _release(request, name, keep_alive)
    yield ndjson_line(shape(name, "", done=True, finish=timer.stats(last or Chunk())))


async def _respond(
    request: Request, body: Any, messages: list[dict], params: dict, shape: Any
) -> Any:
    name = model_name(body.model)
    keep_alive = parse_keep_alive(body.keep_alive)
    timer = _Timer()
    tools, choice = getattr(body, "tools", None), getattr(body, "tool_choice", None)
    stream, turn = await _start(
        request, name, messages, params, body.options, keep_alive, timer, tools, choice
    )
    if body.stream:
        lines = _lines(request, stream, name, keep_alive, shape, timer, turn)
        return Stream(lines, media_type=NDJSON)
    try:
        reply = await collect(stream)
    finally:
        await _release(request, name, keep_alive)
    fields = reply_fields(turn.parse(reply.text))
    return _json(shape(name, **fields, done=True, finish=timer.stats(reply)))


@post("/chat", status_code=200, media_type=NDJSON)
async def chat(request: Request) -> Any:
    body = decode_body(await request.body(), ChatRequest)
    if not body.messages:  # Ollama: no messages = load the model (and keep_alive 0 = unload)
        return await _load_only(request, body, chat_line)
    messages, params = chat_to_chat(body)
    return await _respond(request, body, messages, params, chat_line)


@post("/generate", status_code=200, media_type=NDJSON)
async def generate(request: Request) -> Any:
    body = decode_body(await request.body(), GenerateRequest)
    if not body.prompt:
        return await _load_only(request, body, generate_line)
    if body.raw:
        raise InvalidRequest(
            "raw prompts are not supported; send the prompt without raw", param="raw"
        )
    messages, params = generate_to_chat(body)
    return await _respond(request, body, messages, params, generate_line)


async def _load_only(request: Request, body: Any, shape: Any) -> Response[Any]:
    """Ollama's load/unload idiom: an empty prompt loads; with keep_alive 0 it unloads."""
    name = model_name(body.model)
    keep_alive = parse_keep_alive(body.keep_alive)
    manager = _manager(request)
    if keep_alive == 0:
        model_id = manager.resolve_name(name)
        if model_id in [entry.model_id for entry in manager.loaded()]:
            await manager.unload(name)
        reason = "unload"
    else:
        await manager.get(name, task="chat")
        await _apply_keep_alive(request, name, keep_alive)
        reason = "load"
    line = shape(name, "", done=True)
    line["done_reason"] = reason
    return _json(line)


# --- embeddings ---------------------------------------------------------------------------
async def _embed(
    request: Request, name: str, inputs: list[str], keep_alive: Any
) -> tuple[Any, float]:
    """(the embeddings, seconds spent getting the model: its load when it was not resident)."""
    name = model_name(name)
    started = time.perf_counter()
    engine = await _manager(request).get(name, task="embeddings")
    load_seconds = time.perf_counter() - started
    await _apply_keep_alive(request, name, parse_keep_alive(keep_alive))
    return await engine.aembed(inputs), load_seconds


@post("/embed", status_code=200)
async def embed(request: Request) -> dict:
    body = decode_body(await request.body(), EmbedRequest)
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs:
        raise InvalidRequest("'input' must not be empty", param="input")
    start = time.perf_counter()
    result, load_seconds = await _embed(request, body.model, inputs, body.keep_alive)
    return {
        "model": body.model,
        "embeddings": [[float(x) for x in row] for row in result.vectors],
        "total_duration": int((time.perf_counter() - start) * 1e9),
        "load_duration": int(load_seconds * 1e9),
        "prompt_eval_count": int(result.prompt_tokens),
    }


@post("/embeddings", status_code=200)
async def embeddings(request: Request) -> dict:
    """The older single-prompt form."""
    body = decode_body(await request.body(), EmbeddingsRequest)
    result, _ = await _embed(request, body.model, [body.prompt], body.keep_alive)
    return {"embedding": [float(x) for x in result.vectors[0]]}


ROUTES = [
    Router(
        path="/api",
        route_handlers=[chat, generate, embed, embeddings, *MODEL_HANDLERS],
        # Every key the app maps (runtime/service/error_responses.py), so none of them wins here.
        exception_handlers={e: ollama_error for e in (FoundryError, HTTPException, Exception)},
    )
]
