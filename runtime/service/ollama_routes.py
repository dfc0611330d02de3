"""Ollama's API under `/api`: chat, generate, embed, tags, ps, show, pull, delete, version.

A thin translation layer over the shared generation path (`streaming.start_generation`) and
the model manager: decode an `ollama_protocol` Struct, run, answer NDJSON lines (Ollama
streams by default) or one JSON object. Model names are this project's ids and aliases. Every error
under `/api` renders as Ollama's `{"error": "..."}` through this Router's exception handler;
after the first line a failure is an `{"error": ...}` line, which the `ollama` package raises.
`keep_alive` sets the model's idle TTL in the manager; `0` unloads once the request is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import MediaType, Request, Router, delete, get, post
from litestar.exceptions import HTTPException
from litestar.response import Response, Stream

from runtime import __version__
from runtime.engines.base import Chunk, GenerationParams
from runtime.errors import ContextTooLong, FoundryError, InvalidRequest
from runtime.names import check_model_id
from runtime.progress import ProgressEvent
from runtime.service.api_errors import error_status
from runtime.service.ollama_protocol import (
    ChatRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    PullRequest,
    ShowRequest,
    chat_line,
    chat_to_chat,
    generate_line,
    generate_to_chat,
    iso_time,
    parse_keep_alive,
    strip_latest,
)
from runtime.service.protocol import decode_body
from runtime.service.streaming import PrefetchedStream, collect, start_generation

__all__ = ["ROUTES"]

log = logging.getLogger(__name__)

# Clients (Open WebUI, Continue) gate features on the Ollama version they see.
OLLAMA_COMPAT_VERSION = "0.12.0"
NDJSON = "application/x-ndjson"


def ollama_error(_: Request, exc: Exception) -> Response[Any]:
    status, message, headers = error_status(exc)
    return Response({"error": message}, status_code=status, headers=headers)


def _json(value: dict) -> Response[Any]:
    """A whole (non-streamed) answer from a route whose default media type is NDJSON.

    Litestar gives a handler's `media_type` precedence over a Stream's own, so the
    streaming routes declare NDJSON and their one-object answers say JSON here.
    """
    return Response(value, media_type=MediaType.JSON)


def _line(value: dict) -> bytes:
    return json.dumps(value).encode() + b"\n"


def _name(raw: str, field: str = "model") -> str:
    if not raw:
        raise InvalidRequest(f"'{field}' is required", param=field)
    return check_model_id(strip_latest(raw))


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
) -> PrefetchedStream:
    """Load, fit the prompt in `num_ctx`, set the TTL, submit: every failure here is a real
    status (the first chunk is already in hand)."""
    manager = _manager(request)
    engine = await manager.get(name, task="chat")
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
            if last is None:
                timer.first = time.perf_counter()
            last = chunk
            if chunk.text:
                yield _line(shape(name, chunk.text))
    except Exception as exc:  # after the first byte, an error is a line
        yield _line({"error": error_status(exc)[1]})
        return
    finally:
        await stream.aclose()
        await _release(request, name, keep_alive)
    yield _line(shape(name, "", done=True, finish=timer.stats(last or Chunk())))


async def _respond(
    request: Request, body: Any, messages: list[dict], params: dict, shape: Any
) -> Any:
    name = _name(body.model)
    keep_alive = parse_keep_alive(body.keep_alive)
    timer = _Timer()
    stream = await _start(request, name, messages, params, body.options, keep_alive)
    timer.loaded = time.perf_counter()
    if body.stream:
        return Stream(_lines(request, stream, name, keep_alive, shape, timer), media_type=NDJSON)
    try:
        reply = await collect(stream)
    finally:
        await _release(request, name, keep_alive)
    timer.first = timer.loaded
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
    name = _name(body.model)
    keep_alive = parse_keep_alive(body.keep_alive)
    manager = _manager(request)
    if keep_alive == 0:
        model_id = manager.resolve_name(name)
        if model_id in _loaded_ids(manager):
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
    name = _name(name)
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


# --- models -------------------------------------------------------------------------------
def _store(request: Request) -> Any:
    store = getattr(_manager(request), "store", None)
    if store is None:
        from runtime.store import Store

        store = Store()
    return store


def _loaded_ids(manager: Any) -> list[str]:
    return [entry.model_id for entry in manager.loaded()]


def _details(metadata: dict) -> dict:
    family = str(metadata.get("family") or "")
    return {
        "parent_model": "",
        "format": "onnx",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": str(metadata.get("parameter_size") or ""),
        "quantization_level": str(metadata.get("precision") or metadata.get("target") or ""),
    }


def _modified(model: Any) -> str:
    created = model.manifest.created
    return created or iso_time()


@get("/version", sync_to_thread=False)
def version() -> dict:
    return {"version": OLLAMA_COMPAT_VERSION, "foundry": __version__}


@get("/tags", sync_to_thread=True)
def tags(request: Request) -> dict:
    models = []
    for model in _store(request).list_models():
        if model.metadata.get("task", "chat") not in ("chat", "embeddings"):
            continue
        models.append(
            {
                "name": model.model_id,
                "model": model.model_id,
                "modified_at": _modified(model),
                "size": model.size,
                "digest": model.manifest_digest.removeprefix("sha256:"),
                "details": _details(model.metadata),
            }
        )
    return {"models": models}


@get("/ps", sync_to_thread=True)
def ps(request: Request) -> dict:
    store = _store(request)
    models = []
    for entry in _manager(request).loaded():
        expires = time.time() + 10 * 365 * 86400  # a negative TTL: no expiry
        if entry.ttl >= 0:
            expires = time.time() + max(0.0, entry.ttl - entry.idle_seconds)
        cached = store.resolve(entry.model_id)
        metadata = cached.metadata
        models.append(
            {
                "name": entry.model_id,
                "model": entry.model_id,
                "size": int(entry.size),
                "digest": cached.manifest_digest.removeprefix("sha256:"),
                "details": _details(metadata),
                "expires_at": datetime.fromtimestamp(expires, tz=UTC).isoformat(),
                "size_vram": 0,
                "context_length": metadata.get("context_length"),
            }
        )
    return {"models": models}


@post("/show", status_code=200)
async def show(request: Request) -> dict:
    body = decode_body(await request.body(), ShowRequest)
    name = _name(body.model or body.name)
    manager = _manager(request)
    model = _store(request).resolve(manager.resolve_name(name))
    metadata = model.metadata
    family = str(metadata.get("family") or "")
    task = metadata.get("task", "chat")
    template = ""
    if task == "chat":
        from runtime.engines.prompt import load_chat_template

        template = load_chat_template(model.path).source
    return {
        "modelfile": f"# served by foundry from the store\nFROM {model.model_id}\n",
        "parameters": "",
        "template": template,
        "details": _details(metadata),
        "model_info": {
            "general.architecture": family,
            f"{family or 'model'}.context_length": metadata.get("context_length"),
        },
        "capabilities": ["embedding"] if task == "embeddings" else ["completion"],
        "modified_at": _modified(model),
    }


@delete("/delete", status_code=200)
async def delete_model(request: Request) -> None:
    body = decode_body(await request.body(), DeleteRequest)
    name = _name(body.model or body.name)
    manager = _manager(request)
    model_id = manager.resolve_name(name)
    store = _store(request)
    store.resolve(model_id)  # ModelNotFound -> 404 before anything changes
    if model_id in _loaded_ids(manager):
        await manager.unload(name, force=True)
    await asyncio.to_thread(store.remove, model_id)


@post("/pull", status_code=200, media_type=NDJSON)
async def pull(request: Request) -> Any:
    """Catalog download with Ollama-style progress lines, ending in `{"status": "success"}`."""
    body = decode_body(await request.body(), PullRequest)
    name = _name(body.model or body.name)
    store = _store(request)
    if store.has(name):
        return (
            Stream(_cached_lines(), media_type=NDJSON)
            if body.stream
            else _json({"status": "success"})
        )
    from runtime.download import download, resolve_variant

    await asyncio.to_thread(resolve_variant, name)  # an unknown name is a 404 before any line
    if not body.stream:
        await asyncio.to_thread(download, name, store)
        return _json({"status": "success"})
    return Stream(_pull_lines(store, name), media_type=NDJSON)


async def _cached_lines() -> AsyncIterator[bytes]:
    """A model id already in the store: nothing to fetch (Ollama answers the same way)."""
    for status in ("pulling manifest", "success"):
        yield _line({"status": status})


async def _pull_lines(store: Any, name: str) -> AsyncIterator[bytes]:
    from runtime.download import download

    loop = asyncio.get_running_loop()
    events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

    def progress(event: ProgressEvent) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    def work() -> Any:
        try:
            return download(name, store, progress)
        finally:
            loop.call_soon_threadsafe(events.put_nowait, None)

    yield _line({"status": "pulling manifest"})
    task = loop.run_in_executor(None, work)
    while (event := await events.get()) is not None:
        yield _line(_pull_status(event))
    try:
        await task
    except Exception as exc:
        yield _line({"error": error_status(exc)[1]})
        return
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        yield _line({"status": status})


def _pull_status(event: ProgressEvent) -> dict:
    """`{"status": "pulling <file>", "digest", "total", "completed"}` as Ollama's CLI draws bars."""
    line: dict = {"status": f"{event.phase} {event.message}".strip()}
    if event.unit == "B" and event.total:
        line["status"] = f"pulling {event.message}".strip()
        line["digest"] = event.message
        line["total"] = int(event.total)
        line["completed"] = int(event.completed or 0)
    return line


ROUTES = [
    Router(
        path="/api",
        route_handlers=[
            chat,
            generate,
            embed,
            embeddings,
            version,
            tags,
            ps,
            show,
            delete_model,
            pull,
        ],
        # Every key the app maps (runtime/service/error_responses.py), so none of them wins here.
        exception_handlers={e: ollama_error for e in (FoundryError, HTTPException, Exception)},
    )
]
