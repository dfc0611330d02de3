"""ModelManager: which models are resident, loading them on demand, unloading the idle.

Loads run in a worker thread (never on the event loop); two requests for the same model
while it loads share one load. At most `max_loaded` models stay resident: loading
another evicts the least recently used idle one. A background task unloads models idle
for longer than their TTL. Engines are created from `runtime.engines.ENGINES` by the
manifest's `ModelMetadata.task`. Never imports onnxruntime-genai itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from runtime.artifact_policy import check_artifact
from runtime.engines import load_engine_class
from runtime.engines.protocol import ChatEngineProtocol
from runtime.errors import ModelInUse, ModelLoading, ModelNotFound, UnsupportedTask
from runtime.names import check_model_id

if TYPE_CHECKING:
    from runtime.catalog import Catalog
    from runtime.engines.base import GenerationRecord
    from runtime.engines.protocol import EmbeddingEngineProtocol, Engine, SpeechEngineProtocol
    from runtime.store import CachedModel, Store

__all__ = ["LoadedModel", "ModelManager"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A resident model: what `foundry model ps` and `/openai/loadedmodels` show."""

    model_id: str
    task: str
    engine: Engine
    size: int  # bytes of the artifact on disk
    ttl: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    load_seconds: float = 0.0

    @property
    def idle_seconds(self) -> float:
        return 0.0 if self.active_requests() else time.monotonic() - self.last_used

    def active_requests(self) -> int:
        return int(self.engine.active_requests())


class ModelManager:
    def __init__(
        self, store: Store, *, max_loaded: int = 2, ttl: float = 600.0, queue_size: int = 64
    ):
        self.store = store
        self.max_loaded = max_loaded
        self.ttl = ttl
        self.queue_size = queue_size
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._reserved = 0  # loads past _make_room, not yet in _loaded: they hold a slot too
        self._listeners: list[Callable[[GenerationRecord], None]] = []
        self._reaper: asyncio.Task[None] | None = None
        self._catalog: Catalog | None = None

    # --- names -------------------------------------------------------------------
    def resolve_name(self, name: str) -> str:
        """The store model id for `name`: a cached model id, else a catalog alias's variant.

        Raises:
            InvalidName: `name` cannot be a model id (path characters, ...).
            ModelNotFound: neither; the message lists what is cached.
        """
        check_model_id(name)  # the one grammar: only valid names get near the filesystem
        if self.store.has(name):
            return name
        variant_id = self._catalog_variant(name)
        if variant_id is not None and self.store.has(variant_id):
            return variant_id
        available = ", ".join(m.model_id for m in self.store.list_models()) or "none"
        raise ModelNotFound(
            f"model {name!r} is not in the cache; available models: {available}",
            hint=f"foundry model download {name}",
            param="model",
        )

    def catalog(self) -> Catalog:
        """The model catalog, read once per manager (once per service start).

        Raises:
            CatalogError: a catalog file does not match the schema (not cached; fix and retry).
        """
        if self._catalog is None:
            from runtime.catalog import Catalog

            self._catalog = Catalog.load()
        return self._catalog

    def _catalog_variant(self, name: str) -> str | None:
        """The catalog's variant id for an alias (None: not an alias, or no readable catalog)."""
        try:
            _alias, variant = self.catalog().find(name)
        except Exception:  # not an alias, or an unreadable catalog: the name is simply unknown
            return None
        return variant.id

    def available(self) -> list[CachedModel]:
        """Every cached model (CachedModel), for /v1/models."""
        return self.store.list_models()

    # --- load / unload -------------------------------------------------------------
    async def get(self, name: str, task: str | None = None) -> Engine:
        """The engine serving `name`, loaded on demand.

        Raises:
            ModelNotFound, InvalidName: see `resolve_name`.
            UnsupportedTask: the model serves another task than `task`.
        """
        model_id = self.resolve_name(name)
        if task is not None:
            model_task = self.store.resolve(model_id).info.task
            if model_task != task:
                raise UnsupportedTask(
                    f"model {model_id!r} serves {model_task}, not {task}", param="model"
                )
        loaded = await self._ensure(model_id, None)
        loaded.last_used = time.monotonic()
        return loaded.engine

    async def chat(self, name: str) -> ChatEngineProtocol:
        """The chat engine serving `name` (raises as `get`, UnsupportedTask for other tasks)."""
        return cast(ChatEngineProtocol, await self.get(name, task="chat"))

    async def embeddings(self, name: str) -> EmbeddingEngineProtocol:
        """The embedding engine serving `name`."""
        return cast("EmbeddingEngineProtocol", await self.get(name, task="embeddings"))

    async def speech(self, name: str) -> SpeechEngineProtocol:
        """The speech engine serving `name`."""
        return cast("SpeechEngineProtocol", await self.get(name, task="speech"))

    async def load(self, name: str, ttl: float | None = None) -> LoadedModel:
        loaded = await self._ensure(self.resolve_name(name), ttl)
        if ttl is not None:
            loaded.ttl = ttl
        return loaded

    async def unload(self, name: str, force: bool = False) -> bool:
        """Unload a resident model; False if it was not loaded.

        Raises:
            ModelInUse: it is generating and `force` is False.
        """
        model_id = self.resolve_name(name) if name not in self._loaded else name
        loaded = self._loaded.get(model_id)
        if loaded is None:
            return False
        if loaded.active_requests() and not force:
            raise ModelInUse(
                f"model {model_id!r} is generating for {loaded.active_requests()} request(s)",
                hint="pass force=true to cancel them",
            )
        await self._drop(model_id)
        return True

    async def unload_all(self) -> None:
        for model_id in list(self._loaded):
            await self._drop(model_id)

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    # --- gauges and listeners (for /metrics) --------------------------------------------
    def active_requests(self) -> int:
        return sum(m.active_requests() for m in self._loaded.values())

    def waiting_requests(self) -> int:
        engines = [m.engine for m in self._loaded.values()]
        return sum(e.waiting_requests() for e in engines if isinstance(e, ChatEngineProtocol))

    def add_listener(self, listener: Callable[[GenerationRecord], None]) -> None:
        """Call `listener(record)` on the event loop when any generation finishes."""
        self._listeners.append(listener)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self.unload_all()

    # --- internals ---------------------------------------------------------------------
    async def _ensure(self, model_id: str, ttl: float | None) -> LoadedModel:
        if (loaded := self._loaded.get(model_id)) is not None:
            return loaded
        task = self._loading.get(model_id)
        if task is None:
            task = asyncio.create_task(self._load(model_id, ttl))
            self._loading[model_id] = task
            task.add_done_callback(lambda _t: self._loading.pop(model_id, None))
        return await asyncio.shield(task)

    async def _load(self, model_id: str, ttl: float | None) -> LoadedModel:
        await self._make_room()
        self._reserved += 1  # no await since _make_room's last check: the slot is ours
        try:
            return await self._load_reserved(model_id, ttl)
        finally:
            self._reserved -= 1

    async def _load_reserved(self, model_id: str, ttl: float | None) -> LoadedModel:
        cached = self.store.resolve(model_id)
        task = cached.info.task
        engine_class = load_engine_class(task)
        started = time.perf_counter()
        # Blobs on disk can be swapped after they were checked at import or download.
        await asyncio.to_thread(check_artifact, cached.path)
        engine = await asyncio.to_thread(engine_class, cached.path, cached.info, model_id=model_id)
        if isinstance(engine, ChatEngineProtocol):
            engine.queue_size = self.queue_size
            engine.on_finish = self._notify
        loaded = LoadedModel(
            model_id,
            task,
            engine,
            cached.size,
            self.ttl if ttl is None else ttl,
            load_seconds=time.perf_counter() - started,
        )
        self._loaded[model_id] = loaded
        log.info("loaded %s (%s) in %.2fs", model_id, task, loaded.load_seconds)
        return loaded

    async def _make_room(self) -> None:
        """Evict until a slot is free, counting loads in flight: two loads of different models
        that both checked before either finished used to end with max_loaded + 1 resident."""
        while len(self._loaded) + self._reserved >= self.max_loaded:
            idle = [m for m in self._loaded.values() if not m.active_requests()]
            if not idle:
                busy = len(self._loaded) + self._reserved
                raise ModelLoading(f"all {busy} model slots are busy or loading; retry shortly")
            await self._drop(min(idle, key=lambda m: m.last_used).model_id)

    async def _drop(self, model_id: str) -> None:
        loaded = self._loaded.pop(model_id, None)
        if loaded is not None:
            await asyncio.to_thread(loaded.engine.close)
            log.info("unloaded %s", model_id)

    async def _reap_idle(self) -> None:
        while True:
            ttls = [m.ttl for m in self._loaded.values() if m.ttl >= 0] or [self.ttl]
            await asyncio.sleep(min(5.0, max(0.2, min(ttls) / 4)))
            for loaded in list(self._loaded.values()):
                if (
                    loaded.ttl >= 0
                    and not loaded.active_requests()
                    and loaded.idle_seconds > loaded.ttl
                ):
                    await self._drop(loaded.model_id)

    def _notify(self, record: GenerationRecord) -> None:
        for listener in self._listeners:
            listener(record)
