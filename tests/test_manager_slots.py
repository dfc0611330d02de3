"""ModelManager keeps at most `max_loaded` models resident, counting loads still in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.errors import ModelLoading


@pytest.fixture
def store_with_three(genai_artifact, foundry_home: Path):
    from runtime.store import Store
    from runtime.store.metadata import ModelMetadata

    store = Store()
    for model_id in ("slot-a", "slot-b", "slot-c"):
        store.register(
            genai_artifact("qwen2.5-0.5b"),
            model_id=model_id,
            metadata=ModelMetadata(task="chat", family="qwen2"),
        )
    return store


def test_concurrent_loads_of_different_models_never_exceed_max_loaded(store_with_three) -> None:
    """Three loads started together with max_loaded=2: two load, the third is told to retry
    (503 model_loading). Before, each load checked for room before any finished, and all three
    stayed resident."""
    from runtime.manager import ModelManager

    async def scenario() -> tuple[list[object], list[str]]:
        manager = ModelManager(store_with_three, max_loaded=2)
        try:
            results = await asyncio.gather(
                *(manager.get(m) for m in ("slot-a", "slot-b", "slot-c")), return_exceptions=True
            )
            return results, sorted(m.model_id for m in manager.loaded())
        finally:
            await manager.close()

    results, loaded = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(loaded) == 2
    assert len(refused) == 1 and isinstance(refused[0], ModelLoading), refused
    assert "busy or loading" in str(refused[0])


def test_a_load_after_the_concurrent_ones_evicts_the_idle_lru(store_with_three) -> None:
    from runtime.manager import ModelManager

    async def scenario() -> list[str]:
        manager = ModelManager(store_with_three, max_loaded=2)
        try:
            await asyncio.gather(manager.get("slot-a"), manager.get("slot-b"))
            await manager.get("slot-c")
            return sorted(m.model_id for m in manager.loaded())
        finally:
            await manager.close()

    assert len(asyncio.run(scenario())) == 2
