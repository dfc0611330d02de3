"""Where a decode step's time goes: raw onnxruntime `run` vs the Python around it.

    python benchmarks/profile_batch_step.py --home HOME --model smollm2 [--steps 64]

Layers, each at B = 1, 2, 4, 8 rows of the same ~130-token prompt:
* `raw`: the batch's session alone, `run_with_iobinding` on its bound KV (no sampling;
  ceiling.raw_steps, the figure bench_peers' session ceiling is built from);
* `step`: BatchScheduler._decode_step as the service runs it (sampling, masks, stops,
  detokenize, hand-off to the event loop), with the time inside `run` split out;
* `engine`: ChatEngine.stream consumed on an asyncio loop in this process (no HTTP).
Greedy, ignore_eos. Prints JSON with the others' CPU share (bench_peers.OthersCpu).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from bench_peers import OthersCpu, prompt_text
from ceiling import raw_steps


class _TimedSession:
    """The scheduler's session with the seconds spent inside `run_with_iobinding` counted."""

    def __init__(self, session: Any):
        self._session, self.inside, self.calls = session, 0.0, 0

    def io_binding(self) -> Any:
        return self._session.io_binding()

    def run_with_iobinding(self, binding: Any) -> None:
        start = time.perf_counter()
        self._session.run_with_iobinding(binding)
        self.inside += time.perf_counter() - start
        self.calls += 1


async def served(engine: Any, prompt: list[int], rows: int, tokens: int) -> dict:
    """`rows` streams at once through ChatEngine; decode time split into inside/outside run."""
    from runtime.engines.base import GenerationParams

    params = GenerationParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    timed = engine._scheduler._session
    firsts: list[float] = []

    async def one(i: int) -> int:
        count = 0
        async for chunk in engine.stream([*prompt[:-1], 100 + i], params):
            if chunk.token_ids:
                count += len(chunk.token_ids)
                if count == 1:
                    firsts.append(time.perf_counter())
        return count

    tasks = [asyncio.create_task(one(i)) for i in range(rows)]
    while len(firsts) < rows:
        await asyncio.sleep(0.001)
    inside0, calls0, start = timed.inside, timed.calls, time.perf_counter()
    counts = await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    inside, calls = timed.inside - inside0, timed.calls - calls0
    decoded = sum(counts) - rows
    return {
        "aggregate_tps": decoded / wall,
        "step_ms": 1000 * wall / max(calls, 1),
        "run_ms": 1000 * inside / max(calls, 1),
        "outside_run_share": round(1 - inside / wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rows", default="1,2,4,8")
    parser.add_argument(
        "--spin",
        choices=["auto", "on", "off"],
        default="auto",
        help="force onnxruntime's spinning (auto: threads.spinning_wanted's CPU sample)",
    )
    args = parser.parse_args()
    if args.spin != "auto":
        os.environ["FOUNDRY_SPIN"] = args.spin
    from runtime.engines.chat import ChatEngine
    from runtime.store import Store
    from runtime.store.metadata import ModelMetadata

    artifact = Store(args.home / "cache").resolve(args.model)
    engine = ChatEngine(artifact.path, ModelMetadata(), model_id=args.model)
    engine._scheduler._session = _TimedSession(engine._scheduler._session)
    prompt = engine.encode(prompt_text(100, 1))
    result: dict[str, Any] = {
        "prompt_tokens": len(prompt),
        "threads": engine.threads.intra_op,
        "spinning": engine.threads.spinning,
        "rows": {},
    }
    for rows in [int(r) for r in args.rows.split(",")]:
        with OthersCpu() as others:
            figures = {"raw": raw_steps(engine, prompt, rows, args.steps)}
            figures["engine"] = asyncio.run(served(engine, prompt, rows, args.steps + 1))
        result["rows"][rows] = {**figures, **others.figures}
    engine.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
