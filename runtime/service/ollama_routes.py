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
    parse_keep_alive,
)
from runtime.service.protocol import decode_body
from runtime.service.streaming import PrefetchedStream, collect, start_generation

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
) -> PrefetchedStream:
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
    prompt = engine.encode(engine.render_prompt(messages))
    if len(prompt) >= limit:
        raise ContextTooLong(
            f"prompt is {len(prompt)} tokens; num_ctx is {limit}", param="options.num_ctx"
        )
    # Ollama: no num_predict = until the context is full.
    params["max_tokens"] = min(params.get("max_tokens", limit), limit - len(prompt))
    await _apply_keep_alive(request, name, keep_alive)
    generation = await start_generation(
        manager, name, msgspec.convert(params, GenerationParams), prompt=prompt
    )
    timer.first = time.perf_counter()  # start_generation awaited the first token
    return generation.streams[0]


async def _lines(
    request: Request,
    stream: PrefetchedStream,
    name: str,
    keep_alive: float | None,
    shape: Any,
    timer: _Timer,
) -> AsyncIterator[bytes]:
    """NDJSON: one line per chunk of text, then `done: true` with the counters."""
    last = None
    try:
        async for chunk in stream:
            last = chunk
            if chunk.text:
                yield ndjson_line(shape(name, chunk.text))
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
    stream = await _start(request, name, messages, params, body.options, keep_alive, timer)
    if body.stream:
        return Stream(_lines(request, stream, name, keep_alive, shape, timer), media_type=NDJSON)
    try:
        reply = await collect(stream)
    finally:
        await _release(request, name, keep_alive)
    return _json(shape(name, reply.text, done=True, finish=timer.stats(reply)))


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
async def _embed(request: Request, name: str, inputs: list[str], keep_alive: Any) -> Any:
    name = model_name(name)
    engine = await _manager(request).get(name, task="embeddings")
    await _apply_keep_alive(request, name, parse_keep_alive(keep_alive))
    return await engine.aembed(inputs)


@post("/embed", status_code=200)
async def embed(request: Request) -> dict:
    body = decode_body(await request.body(), EmbedRequest)
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs:
        raise InvalidRequest("'input' must not be empty", param="input")
    start = time.perf_counter()
    result = await _embed(request, body.model, inputs, body.keep_alive)
    return {
        "model": body.model,
        "embeddings": [[float(x) for x in row] for row in result.vectors],
        "total_duration": int((time.perf_counter() - start) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": int(result.prompt_tokens),
    }


@post("/embeddings", status_code=200)
async def embeddings(request: Request) -> dict:
    """The older single-prompt form."""
    body = decode_body(await request.body(), EmbeddingsRequest)
    result = await _embed(request, body.model, [body.prompt], body.keep_alive)
    return {"embedding": [float(x) for x in result.vectors[0]]}


ROUTES = [
    Router(
        path="/api",
        route_handlers=[chat, generate, embed, embeddings, *MODEL_HANDLERS],
        # Every key the app maps (runtime/service/error_responses.py), so none of them wins here.
        exception_handlers={e: ollama_error for e in (FoundryError, HTTPException, Exception)},
    )
]
