"""Foundry Local's management routes, with its names and JSON shapes, plus /health and /metrics.

The shapes follow what foundry-local-sdk 0.5.x (Python, JS, C#) reads, which is camelCase
(`modelDirPath`, `success`); where Foundry Local's REST reference documents PascalCase
(`ModelDirPath`, `Success`) both spellings are sent. Any translation between Foundry Local's
shapes and ours lives here and in `wire.py`, nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post, route
from litestar.response import Response, Stream

from runtime import __version__
from runtime.errors import FoundryError, InvalidRequest, ProviderUnavailable
from runtime.hardware import detect
from runtime.manager import ModelManager
from runtime.placement import DEVICE_RANK
from runtime.progress import ProgressEvent, ThreadedProgress
from runtime.service import metrics
from runtime.service.apis.foundry import wire
from runtime.service.transport import PlainJsonBody

if TYPE_CHECKING:
    from runtime.manager import LoadedModel
    from runtime.service.settings import ServiceSettings
    from runtime.store import CachedModel

__all__ = ["ROUTES"]

log = logging.getLogger(__name__)
STARTED = time.time()
NEVER_UNLOAD = -1.0  # the manager's ttl for "stay loaded until asked"


def _loaded_ids(manager: ModelManager) -> list[str]:
    return [entry.model_id for entry in manager.loaded()]


# --- liveness, status, metrics ----------------------------------------------------------------
@get("/health", sync_to_thread=False)
def health() -> wire.Health:
    """Liveness: answered without an API key, so it says nothing about models."""
    return wire.Health("ok", __version__)


@get("/openai/status", sync_to_thread=True)  # the first call may probe the hardware
def openai_status(request: Request, manager: ModelManager) -> wire.Status:
    from runtime.engines.huge_pages import huge_pages
    from runtime.engines.threads import session_threads
    from runtime.service.state import endpoint_host

    settings: ServiceSettings = request.app.state.settings
    port = settings.port or (request.scope.get("server") or ("", 0))[1]
    endpoints = [f"http://{endpoint_host(settings.host)}:{port}"]
    model_dir = str(manager.store.layout.root)
    default = session_threads(spin_control=False)  # what a model loaded now gets
    chosen = {entry.model_id: entry.engine.threads for entry in manager.loaded()}
    return wire.Status(
        endpoints=endpoints,
        model_dir_path=model_dir,
        endpoints_pascal=endpoints,
        model_dir_path_pascal=model_dir,
        version=__version__,
        pid=os.getpid(),
        uptime=round(time.time() - STARTED, 3),
        providers=sorted(detect().providers),
        loaded_models=_loaded_ids(manager),
        threads=wire.Threads(
            intra_op=default.intra_op,
            source=default.source,
            loaded_models={model_id: threads.intra_op for model_id, threads in chosen.items()},
            spinning={model_id: threads.spinning for model_id, threads in chosen.items()},
        ),
        huge_pages=huge_pages(),
    )


@get("/metrics", sync_to_thread=False, media_type=metrics.CONTENT_TYPE)
def metrics_text(manager: ModelManager) -> Response[str]:
    loaded = _loaded_ids(manager)
    gauges: dict[str, dict[Any, float]] = {
        "foundry_loaded_models": {(): len(loaded)},
        "foundry_model_loaded": {(("model", model_id),): 1 for model_id in loaded},
        "foundry_info": {(("version", __version__),): 1},
        "foundry_queue_depth": {(): manager.waiting_requests()},
        "foundry_generating_requests": {(): manager.active_requests()},
    }
    return Response(metrics.render(gauges), media_type=metrics.CONTENT_TYPE)


# --- catalog and cache ------------------------------------------------------------------------
@get("/foundry/list", sync_to_thread=True)
def foundry_list(manager: ModelManager) -> list[wire.ListItem]:
    """Catalog variants (runnable here first, NPU > GPU > CPU, as the SDK expects), then cached
    models the catalog does not know (local builds such as `tiny-qwen`)."""
    hardware = detect()
    variants = manager.catalog().variants()
    variants.sort(
        key=lambda v: (not hardware.has_provider(v.provider), DEVICE_RANK.get(v.device, 3))
    )
    items = [wire.variant_list_item(v) for v in variants]
    known = {item.name for item in items}
    items += [
        wire.cached_list_item(m) for m in manager.store.list_models() if m.model_id not in known
    ]
    return items


@get("/openai/models", sync_to_thread=True)
def openai_models(manager: ModelManager) -> list[str]:
    """The ids of cached models (what Foundry Local's SDK calls `list_cached_models`)."""
    return [m.model_id for m in manager.store.list_models()]


@post(
    "/openai/download", status_code=200, media_type="text/plain", dto=PlainJsonBody, return_dto=None
)
async def openai_download(manager: ModelManager, data: wire.DownloadRequest) -> Stream:
    """Download (or compile) a catalog model: progress lines with a percentage, then one JSON
    line, `{"success": bool, "errorMessage": str | null, ...}`."""
    from runtime import download

    name = data.name()
    store = manager.store
    if store.has(name):  # a cached model (even outside the catalog) needs no download
        task = ThreadedProgress(lambda progress: download.already_cached(name, store, progress))
    else:  # resolve before the first byte, so an unknown name is a real 404, not a failed stream
        name = (await asyncio.to_thread(download.resolve_variant, name)).id
        task = ThreadedProgress(lambda progress: download.download(name, store, progress))
    return Stream(_download_lines(task, name), media_type="text/plain")


async def _download_lines(task: ThreadedProgress[CachedModel], name: str) -> AsyncIterator[str]:
    """Forward the download's progress events (from its thread) as lines, then its verdict."""
    async for event in task:
        yield _progress_line(event)
    try:
        cached = await task.result()
        result = {"success": True, "errorMessage": None, "modelId": cached.model_id}
    except FoundryError as exc:
        result = {"success": False, "errorMessage": exc.message, "code": exc.code}
    except Exception as exc:  # a download bug must still end the stream with a verdict
        log.exception("download of %s failed", name)
        result = {
            "success": False,
            "errorMessage": f"download failed: {type(exc).__name__}",
            "code": "internal_error",
        }
    result |= {"Success": result["success"], "ErrorMessage": result["errorMessage"]}
    yield json.dumps(result) + "\n"


def _progress_line(event: ProgressEvent) -> str:
    """`Total 42.50% download model.onnx.data`: the SDK reads the `NN%`, a human the rest."""
    percent = 100.0 if event.done else 0.0
    if event.total:
        percent = min(100.0, 100.0 * (event.completed or 0) / event.total)
    message = event.message.replace("\n", " ")
    return f"Total {percent:.2f}% {event.phase} {message}".rstrip() + "\n"


# --- load / unload ----------------------------------------------------------------------------
def _query_bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"expected true or false, got {value[:40]!r}")


def _query_ttl(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        ttl = float(value)
    except ValueError:
        raise InvalidRequest(
            f"ttl must be a number of seconds, got {value[:40]!r}", param="ttl"
        ) from None
    if not 0 <= ttl <= 10 * 365 * 86400:
        raise InvalidRequest(
            f"ttl must be between 0 and 315360000 seconds, got {value[:40]}", param="ttl"
        )
    return ttl


# Foundry Local's SDK loads and unloads with GET; POST too, the form a browser cannot send from a
# foreign page without an Origin header (SecurityMiddleware refuses foreign origins either way).
@route("/openai/load/{name:str}", http_method=["GET", "POST"], status_code=200)
async def openai_load(request: Request, manager: ModelManager, name: str) -> wire.Loaded:
    """Load a model now (`ttl` seconds idle before it unloads; `ep` must be available here)."""
    ttl = _query_ttl(request.query_params.get("ttl"))
    ep = (request.query_params.get("ep") or "").lower()
    if ep and not (hardware := detect()).has_provider(ep):
        raise ProviderUnavailable(
            f"execution provider {ep!r} is not available here "
            f"(available: {', '.join(sorted(hardware.providers))})",
            param="ep",
        )
    if not ttl:  # Foundry Local: a ttl > 0 wins; else unload=false keeps the model loaded
        ttl = None if _query_bool(request.query_params.get("unload"), True) else NEVER_UNLOAD
    loaded = await manager.load(name, ttl=ttl)
    return wire.Loaded(
        model=loaded.model_id, loaded=True, ttl=None if loaded.ttl < 0 else loaded.ttl
    )


@route("/openai/unload/{name:str}", http_method=["GET", "POST"], status_code=200)
async def openai_unload(request: Request, manager: ModelManager, name: str) -> wire.Unloaded:
    force = _query_bool(request.query_params.get("force"), False)
    model_id = manager.resolve_name(name)
    return wire.Unloaded(model=model_id, unloaded=await manager.unload(model_id, force=force))


@route("/openai/unloadall", http_method=["GET", "POST"], status_code=200)
async def openai_unload_all(manager: ModelManager) -> wire.UnloadedAll:
    before = _loaded_ids(manager)
    await manager.unload_all()
    return wire.UnloadedAll(before)


@get("/openai/loadedmodels", sync_to_thread=False)
def openai_loaded_models(manager: ModelManager) -> list[str]:
    return _loaded_ids(manager)


@get("/foundry/ps", sync_to_thread=False)
def foundry_ps(manager: ModelManager) -> wire.Resident:
    """This project's extension for `foundry model ps`: what is resident, size, idle time."""
    return wire.Resident([_ps_row(entry) for entry in manager.loaded()])


def _ps_row(entry: LoadedModel) -> wire.ResidentModel:
    idle = entry.idle_seconds
    ttl = entry.ttl if entry.ttl >= 0 else None  # a negative TTL never expires
    return wire.ResidentModel(
        model=entry.model_id,
        task=entry.task,
        size=entry.size,
        idle_seconds=round(idle, 1),
        ttl=ttl,
        expires_in=None if ttl is None else round(max(0.0, ttl - idle), 1),
        active_requests=entry.active_requests(),
        loaded_at=entry.loaded_at,
        load_seconds=round(entry.load_seconds, 3),
    )


# --- token counting ---------------------------------------------------------------------------
@post(
    "/v1/chat/completions/tokenizer/encode/count",
    status_code=200,
    dto=PlainJsonBody,
    return_dto=None,
)
async def count_tokens(manager: ModelManager, data: wire.TokenCountRequest) -> wire.TokenCount:
    """The prompt's token count after the model's chat template, without generating."""
    engine = await manager.chat(data.model)
    prompt = engine.render_prompt(
        [_plain_message(m) for m in data.messages], tools=data.tools or None
    )
    return wire.TokenCount(len(engine.encode(prompt)))


def _plain_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message as the chat template reads it, which joins text parts itself."""
    if not isinstance(message.get("role"), str):
        raise InvalidRequest("each message needs a 'role' and 'content'", param="messages")
    content = message.get("content")
    return message if isinstance(content, (str, list)) else {**message, "content": ""}


ROUTES = [
    health,
    openai_status,
    metrics_text,
    foundry_list,
    openai_models,
    openai_download,
    openai_load,
    openai_unload,
    openai_unload_all,
    openai_loaded_models,
    foundry_ps,
    count_tokens,
]
