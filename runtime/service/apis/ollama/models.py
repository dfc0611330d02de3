"""Ollama's model routes under `/api`: version, tags, ps, show, delete and pull.

Answers from the store and the model manager in Ollama's shapes (`ollama.Client.list/ps/
show/delete/pull` parse them). `pull` is the catalog download (`runtime/download.py`) with
Ollama-style progress lines. `routes.py` mounts these handlers in its `/api` Router,
so their errors render in Ollama's shape too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from litestar import delete, get, post
from litestar.response import Stream

from runtime import __version__
from runtime.manager import ModelManager
from runtime.progress import ProgressEvent, ThreadedProgress
from runtime.service.apis.ollama import wire
from runtime.service.errors import describe, ollama_body
from runtime.service.openapi import streamed
from runtime.service.transport import NDJSON, WireBody, ndjson, whole

__all__ = ["MODEL_HANDLERS", "OLLAMA_COMPAT_VERSION"]

# Clients (Open WebUI, Continue) gate features on the Ollama version they see.
OLLAMA_COMPAT_VERSION = "0.12.0"


def _size_vram(size: int, metadata: dict) -> int:
    """Bytes of the model in GPU memory: none on the CPU provider (measured: nothing is there);
    on a GPU provider the artifact's bytes, which its session holds there (an estimate from the
    artifact, as Ollama's own figure is an estimate of the layers it offloaded)."""
    return 0 if metadata.get("provider", "cpu") == "cpu" else int(size)


def _details(metadata: dict) -> wire.Details:
    family = str(metadata.get("family") or "")
    return wire.Details(
        family=family,
        families=[family] if family else None,
        parameter_size=str(metadata.get("parameter_size") or ""),
        quantization_level=str(metadata.get("precision") or metadata.get("target") or ""),
    )


def _modified(model: Any) -> str:
    created = model.manifest.created
    return created or wire.iso_time()


@get("/version", sync_to_thread=False)
def version() -> wire.Version:
    return wire.Version(OLLAMA_COMPAT_VERSION, __version__)


@get("/tags", sync_to_thread=True)
def tags(manager: ModelManager) -> wire.Listed:
    models = []
    for model in manager.store.list_models():
        if model.metadata.get("task", "chat") not in ("chat", "embeddings"):
            continue
        models.append(
            wire.ListedModel(
                name=model.model_id,
                model=model.model_id,
                modified_at=_modified(model),
                size=model.size,
                digest=model.manifest_digest.removeprefix("sha256:"),
                details=_details(model.metadata),
            )
        )
    return wire.Listed(models)


@get("/ps", sync_to_thread=True)
def ps(manager: ModelManager) -> wire.Running:
    store = manager.store
    models = []
    for entry in manager.loaded():
        expires = time.time() + 10 * 365 * 86400  # a negative TTL: no expiry
        if entry.ttl >= 0:
            expires = time.time() + max(0.0, entry.ttl - entry.idle_seconds)
        cached = store.resolve(entry.model_id)
        metadata = cached.metadata
        models.append(
            wire.RunningModel(
                name=entry.model_id,
                model=entry.model_id,
                size=int(entry.size),
                digest=cached.manifest_digest.removeprefix("sha256:"),
                details=_details(metadata),
                expires_at=datetime.fromtimestamp(expires, tz=UTC).isoformat(),
                size_vram=_size_vram(entry.size, metadata),
                context_length=metadata.get("context_length"),
            )
        )
    return wire.Running(models)


@post("/show", status_code=200, dto=WireBody, return_dto=None)
async def show(data: wire.ShowRequest, manager: ModelManager) -> wire.Show:
    name = wire.model_name(data.model or data.name)
    model = manager.store.resolve(manager.resolve_name(name))
    metadata = model.metadata
    family = str(metadata.get("family") or "")
    task = metadata.get("task", "chat")
    template = ""
    if task == "chat":
        from runtime.engines.prompt import load_chat_template

        template = load_chat_template(model.path).source
    return wire.Show(
        modelfile=f"# served by foundry from the store\nFROM {model.model_id}\n",
        parameters="",
        template=template,
        details=_details(metadata),
        model_info={
            "general.architecture": family,
            f"{family or 'model'}.context_length": metadata.get("context_length"),
        },
        capabilities=["embedding"] if task == "embeddings" else ["completion"],
        modified_at=_modified(model),
    )


@delete("/delete", status_code=200, dto=WireBody, return_dto=None)
async def delete_model(data: wire.DeleteRequest, manager: ModelManager) -> None:
    name = wire.model_name(data.model or data.name)
    model_id = manager.resolve_name(name)
    store = manager.store
    store.resolve(model_id)  # ModelNotFound -> 404 before anything changes
    if model_id in [entry.model_id for entry in manager.loaded()]:
        await manager.unload(name, force=True)
    await asyncio.to_thread(store.remove, model_id)


@post("/pull", status_code=200, **streamed(wire.PullStatus, NDJSON, "`success` when done"))
async def pull(data: wire.PullRequest, manager: ModelManager) -> Any:
    """Catalog download with Ollama-style progress lines, ending in `{"status": "success"}`."""
    name = wire.model_name(data.model or data.name)
    store = manager.store
    if store.has(name):
        return (
            Stream(_cached_lines(), media_type=NDJSON)
            if data.stream
            else whole(wire.PullStatus("success"))
        )
    from runtime.download import download, resolve_variant

    await asyncio.to_thread(resolve_variant, name)  # an unknown name is a 404 before any line
    if not data.stream:
        await asyncio.to_thread(download, name, store)
        return whole(wire.PullStatus("success"))
    return Stream(_pull_lines(store, name), media_type=NDJSON)


async def _cached_lines() -> AsyncIterator[bytes]:
    """A model id already in the store: nothing to fetch (Ollama answers the same way)."""
    for status in ("pulling manifest", "success"):
        yield ndjson({"status": status})


async def _pull_lines(store: Any, name: str) -> AsyncIterator[bytes]:
    from runtime.download import download

    yield ndjson({"status": "pulling manifest"})
    task = ThreadedProgress(lambda progress: download(name, store, progress))
    async for event in task:
        yield ndjson(_pull_status(event))
    try:
        await task.result()
    except Exception as exc:
        yield ndjson(ollama_body(describe(exc)))
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


MODEL_HANDLERS = [version, tags, ps, show, delete_model, pull]
