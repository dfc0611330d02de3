"""Ollama's model routes under `/api`: version, tags, ps, show, delete and pull.

Answers from the store and the model manager in the shapes `ollama.Client.list/ps/show/
delete/pull` parse; `pull` is the catalog download (`runtime/download.py`) with Ollama-style
progress lines. `routes.py` mounts these in its `/api` Router (so errors are Ollama's shape).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import delete, get, post
from litestar.response import Stream

from runtime import __version__
from runtime.manager import ModelManager
from runtime.progress import ProgressEvent, ThreadedProgress
from runtime.service.apis.ollama import wire
from runtime.service.errors import Described, describe, ollama_body
from runtime.service.openapi import streamed
from runtime.service.transport import NDJSON, WireBody, ndjson, whole

if TYPE_CHECKING:
    from runtime.store import CachedModel
    from runtime.store.metadata import ModelMetadata

__all__ = ["MODEL_HANDLERS", "OLLAMA_COMPAT_VERSION", "error_line"]

# Clients (Open WebUI, Continue) gate features on the Ollama version they see.
OLLAMA_COMPAT_VERSION = "0.12.0"


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
    store = manager.store
    store.resolve(model_id)  # ModelNotFound -> 404 before anything changes
    await manager.unload(model_id, force=True)  # False (nothing to do) when it is not resident
    await asyncio.to_thread(store.remove, model_id)


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


def error_line(error: Described) -> bytes:
    """After the first line a failure is an `{"error": ...}` line (the `ollama` package raises)."""
    return ndjson(ollama_body(error))


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


MODEL_HANDLERS = [version, tags, ps, show, delete_model, pull]
