"""What the bare onnxruntime session allows: the ceiling any scheduler on it can reach.

The service's continuous batch runs the builder's decoder graph through `BatchScheduler._run`.
Timing that call alone (no sampling, no streams, no HTTP) at 1, 4 and 8 rows gives the cost of
a prefill and of a decode step; from them, the best aggregate tok/s n clients could get with a
scheduler that costs nothing:

    T(n) = n * prefill(1 row) + (tokens - 1) * step(n rows)

(prefills one row at a time, as the scheduler admits them; a prefill of n rows in one run is
timed too and used where it is cheaper). Then ideal aggregate(n) = n * tokens / T(n), and the
measured service's scaling is read against ideal aggregate(n) / ideal aggregate(1).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np


def raw_steps(engine: Any, prompt: list[int], rows: int, steps: int) -> dict:
    """Prefill `rows` buffer rows, then time `steps` bare decode runs over all of them."""
    sched = engine._scheduler
    sched._ensure_capacity(len(prompt) + steps + 8)
    fake = [SimpleNamespace(length=0) for _ in range(rows)]
    for i, row in enumerate(fake):
        sched._run(i, [row], np.asarray([prompt], dtype=np.int64))
        row.length = len(prompt)
    ids = np.full((rows, 1), 42, dtype=np.int64)
    sched._run(0, fake, ids)  # warm the binding
    for row in fake:
        row.length += 1
    start = time.perf_counter()
    for _ in range(steps):
        sched._run(0, fake, ids)
        for row in fake:
            row.length += 1
    wall = time.perf_counter() - start
    return {"step_ms": 1000 * wall / steps, "aggregate_tps": rows * steps / wall}


def prefill_seconds(engine: Any, prompt: list[int], rows: int, repeats: int = 3) -> float:
    """Best of `repeats` runs prefilling `rows` rows of `prompt` in one session run."""
    sched = engine._scheduler
    sched._ensure_capacity(len(prompt) + 8)
    ids = np.asarray([prompt] * rows, dtype=np.int64)
    best = float("inf")
    for _ in range(repeats + 1):  # the first binds
        fake = [SimpleNamespace(length=0) for _ in range(rows)]
        start = time.perf_counter()
        sched._run(0, fake, ids)
        best = min(best, time.perf_counter() - start)
    return best


def session_ceiling(artifact: Path, prompt: str, tokens: int, steps: int = 64) -> dict:
    """The bare session's prefill and step costs, and the ideal aggregates they allow."""
    from runtime.engines.chat import ChatEngine
    from runtime.store.metadata import ModelMetadata

    engine = ChatEngine(artifact, ModelMetadata(), model_id="ceiling")
    try:
        ids = engine.encode(prompt)
        prefill_1 = prefill_seconds(engine, ids, 1)
        figures: dict[str, Any] = {
            "prompt_tokens": len(ids),
            "prefill_1_row_s": round(prefill_1, 3),
        }
        ideal = {}
        for n in (1, 4, 8):
            step = raw_steps(engine, ids, n, steps)["step_ms"] / 1000
            prefill = n * prefill_1
            if n > 1:
                batched = prefill_seconds(engine, ids, n)
                figures[f"prefill_{n}_rows_in_one_run_s"] = round(batched, 3)
                prefill = min(prefill, batched)
            ideal[n] = n * tokens / (prefill + (tokens - 1) * step)
            figures |= {
                f"step_{n}_rows_ms": round(1000 * step, 2),
                f"ideal_aggregate_tps_{n}": round(ideal[n], 1),
            }
    finally:
        engine.close()
    for n in (4, 8):
        figures[f"ideal_aggregate_{n}_over_1"] = round(ideal[n] / ideal[1], 3)
    return figures
