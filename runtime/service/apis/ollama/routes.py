"""Ollama's API under `/api`: chat, generate, embed(dings), and the model routes (version, tags,
ps, show, delete, pull) in the shapes the `ollama` package parses.

A thin layer over the shared seam (`turn.py`): decode a `wire.py` Struct, `to_turn`,
`open_turn`, answer NDJSON lines (Ollama streams by default) or one JSON object. Errors render
as Ollama's `{"error": "..."}` (errors.py), after the first line as an error line, which the
`ollama` package raises. `keep_alive` sets the model's idle TTL; `0` unloads when done.
`pull` is the catalog download (`runtime/download.py`) with Ollama-style progress lines.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import Router, delete, get, post
from litestar.response import Response, Stream

from runtime import __version__
from runtime.errors import FoundryError, InvalidRequest
from runtime.manager import ModelManager
from runtime.progress import ProgressEvent, ThreadedProgress
from runtime.service.apis.ollama import wire
from runtime.service.errors import Described, describe, ollama_body
from runtime.service.openapi import streamed
from runtime.service.replies import Finished
from runtime.service.transport import NDJSON, WireBody, framed, ndjson, whole
from runtime.service.turn import OpenTurn, open_turn
from runtime.tools.parsers import ToolCall

if TYPE_CHECKING:
    from runtime.store import CachedModel
    from runtime.store.metadata import ModelMetadata

__all__ = ["OLLAMA_COMPAT_VERSION", "ROUTES"]

log = logging.getLogger(__name__)
# Clients (Open WebUI, Continue) gate features on the Ollama version they see.
OLLAMA_COMPAT_VERSION = "0.12.0"


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
    if keep_alive:
        await manager.load(name, ttl=-1.0 if math.isinf(keep_alive) else keep_alive)


async def _release(manager: ModelManager, name: str, keep_alive: float | None) -> None:
    """keep_alive 0: unload now that the request is done (a busy model stays; it is logged)."""
    if keep_alive != 0:
        return
    try:
        await manager.unload(name)
    except FoundryError as exc:
        log.info("keep_alive 0: %s stays loaded: %s", name, exc.message)


def error_line(error: Described) -> bytes:
    """After the first line a failure is an `{"error": ...}` line (the `ollama` package raises)."""
    return ndjson(ollama_body(error))


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
        return whole(shape(name, done=True, done_reason="unload"))
    await manager.chat(name)
    await _apply_keep_alive(manager, name, keep_alive)
    return whole(shape(name, done=True, done_reason="load"))


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


# --- models ---------------------------------------------------------------------------------
def _details(info: ModelMetadata) -> wire.Details:
    family = info.family or ""
    return wire.Details(
        family=family,
        families=[family] if family else None,
        quantization_level=info.precision or info.target or "",
    )


def _modified(model: CachedModel) -> str:
    return model.manifest.created or wire.iso_time()


@get("/version", sync_to_thread=False)
def version() -> wire.Version:
    return wire.Version(OLLAMA_COMPAT_VERSION, __version__)


@get("/tags", sync_to_thread=True)
def tags(manager: ModelManager) -> wire.Listed:
    return wire.Listed(
        [
            wire.ListedModel(
                name=model.model_id,
                model=model.model_id,
                modified_at=_modified(model),
                size=model.size,
                digest=model.manifest_digest.removeprefix("sha256:"),
                details=_details(model.info),
            )
            for model in manager.store.list_models()
            if model.info.task in ("chat", "embeddings")
        ]
    )


@get("/ps", sync_to_thread=True)
def ps(manager: ModelManager) -> wire.Running:
    models = []
    for entry in manager.loaded():
        # seconds until the idle reaper unloads it; a negative TTL never expires (ten years)
        left = max(0.0, entry.ttl - entry.idle_seconds) if entry.ttl >= 0 else 10 * 365 * 86400
        cached = manager.store.resolve(entry.model_id)
        models.append(
            wire.RunningModel(
                name=entry.model_id,
                model=entry.model_id,
                size=entry.size,
                digest=cached.manifest_digest.removeprefix("sha256:"),
                details=_details(cached.info),
                expires_at=datetime.fromtimestamp(time.time() + left, tz=UTC).isoformat(),
                # none on the CPU provider (measured); on a GPU one the artifact's bytes, which
                # its session holds there (an estimate, as Ollama's figure for its layers is)
                size_vram=0 if cached.info.provider == "cpu" else cached.size,
                context_length=cached.info.context_length,
            )
        )
    return wire.Running(models)


@post("/show", status_code=200, dto=WireBody, return_dto=None)
async def show(data: wire.ShowRequest, manager: ModelManager) -> wire.Show:
    model = manager.store.resolve(manager.resolve_name(data.model_id()))
    info = model.info
    family = info.family or ""
    template = ""
    if info.task == "chat":
        from runtime.engines.prompt import load_chat_template

        template = load_chat_template(model.path).source
    return wire.Show(
        modelfile=f"# served by foundry from the store\nFROM {model.model_id}\n",
        parameters="",
        template=template,
        details=_details(info),
        model_info={
            "general.architecture": family,
            f"{family or 'model'}.context_length": info.context_length,
        },
        capabilities=["embedding"] if info.task == "embeddings" else ["completion"],
        modified_at=_modified(model),
    )


@delete("/delete", status_code=200, dto=WireBody, return_dto=None)
async def delete_model(data: wire.ShowRequest, manager: ModelManager) -> None:
    model_id = manager.resolve_name(data.model_id())
    manager.store.resolve(model_id)  # ModelNotFound -> 404 before anything changes
    await manager.unload(model_id, force=True)  # False (nothing to do) when it is not resident
    await asyncio.to_thread(manager.store.remove, model_id)


@post("/pull", status_code=200, **streamed(wire.PullStatus, NDJSON, "`success` when done"))
async def pull(data: wire.PullRequest, manager: ModelManager) -> Any:
    """Catalog download with Ollama-style progress lines, ending in `{"status": "success"}`."""
    from runtime.download import download, resolve_variant

    name = data.model_id()
    store = manager.store
    cached = store.has(name)
    if not cached:  # an unknown name is a 404 before any line
        await asyncio.to_thread(resolve_variant, name)
    if data.stream:
        return Stream(_pull_lines(store, name, cached), media_type=NDJSON)
    if not cached:
        await asyncio.to_thread(download, name, store)
    return whole(wire.PullStatus("success"))


async def _pull_lines(store: Any, name: str, cached: bool) -> AsyncIterator[bytes]:
    """Not `framed`: a download leaves nothing to close when the client goes away. A model
    already in the store has nothing to fetch (Ollama answers the same way)."""
    from runtime.download import download

    yield ndjson({"status": "pulling manifest"})
    if not cached:
        task = ThreadedProgress(lambda progress: download(name, store, progress))
        async for event in task:
            yield ndjson(_pull_status(event))
        try:
            await task.result()
        except Exception as exc:
            yield error_line(describe(exc))
            return
    yield ndjson({"status": "success"})


def _pull_status(event: ProgressEvent) -> dict:
    """`{"status": "pulling <file>", "digest", "total", "completed"}` as Ollama's CLI draws bars.

    Every line stands for something the download did: its files' sha256 were checked as they
    arrived (runtime/download.py), the folder was loaded ("validate"), its blobs and manifest
    were written ("register"); no line is sent for a step that did not happen.
    """
    line: dict = {"status": f"{event.phase} {event.message}".strip()}
    if event.phase == "register":
        line = {"status": "writing manifest" if event.done else f"writing {event.message}"}
    elif event.unit == "B" and event.total:
        line["status"] = f"pulling {event.message}".strip()
        line["digest"] = event.message
        line["total"] = int(event.total)
        line["completed"] = int(event.completed or 0)
    return line


_HANDLERS = [chat, generate, embed, embeddings, version, tags, ps, show, delete_model, pull]
ROUTES = [Router(path="/api", route_handlers=_HANDLERS)]
