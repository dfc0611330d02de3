"""Pruned LM head + per-request og.Generator vs full logits + og.Engine, in one process.

    python benchmarks/bench_batching.py [--rounds 3] [--tokens 48] [--prompt 128]

onnxruntime-genai 0.18 on CPU has only the static-batch `og.Engine`, which sizes its logits
output as [batch, prompt, vocab] and so cannot run an artifact built with `prune_lm_head`
(logits [batch, 1, vocab]). The serving choice is therefore between:
  (a) pruned artifact, one og.Generator per request in its own thread (what the runtime does
      with pruned artifacts);
  (b) full-logits artifact, og.Engine advancing all requests in one step;
  (c) full-logits artifact, one og.Generator per request in its own thread.
Both artifacts: synthetic model with the real Qwen2.5-0.5B dimensions, cpu-int4, built by the
project's compiler (the same recipe target, `prune_lm_head` true / false), in a private
FOUNDRY_HOME (once; later runs reuse it). Measured, alternating the three paths each round:
single-request time to first token (at `--prompt` tokens) and decode tok/s, and aggregate
completion tok/s with 1, 4 and 8 concurrent requests (greedy, fixed length). Also each
path's process RSS growth while loaded. Prints JSON with medians and ratios to (a).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
from common import SYNTHETIC_ID, synthetic_model, timed_greedy

PRUNED_ID = SYNTHETIC_ID
FULL_ID = "bench-qwen2.5-0.5b-int4-full-logits"


def ensure_models() -> dict[str, Path]:
    """Both artifacts from the qwen2 recipe's cpu-int4 target; the second with prune_lm_head off."""
    return {
        PRUNED_ID: synthetic_model(model_id=PRUNED_ID).path,
        FULL_ID: synthetic_model(model_id=FULL_ID, builder={"prune_lm_head": False}).path,
    }


def prompt_ids(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 5000, size=n, dtype=np.int32)


# --- per-request og.Generator (paths a and c) -------------------------------------------------
def generators_concurrent(
    model: og.Model, prompts: list[np.ndarray], tokens: int, stagger: float = 0.0
) -> dict:
    """One thread per request (request i arrives at i * stagger seconds)."""
    results: list[dict] = [{}] * len(prompts)
    start = time.perf_counter()

    def one(i: int) -> None:
        arrival = start + i * stagger
        time.sleep(max(0.0, arrival - time.perf_counter()))
        # Time to first token counts from the arrival: 0.18's og.Generator holds the GIL through
        # append_tokens and generate_next_token, so a thread may wait long before it runs at all.
        results[i] = timed_greedy(model, prompts[i], tokens, since=arrival)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return _aggregate(results, wall)


# --- og.Engine (path b) -------------------------------------------------------------------------
class EngineRunner:
    """One og.Engine on the calling thread (it is thread-affine), sized for `batch` requests."""

    def __init__(self, model: og.Model):
        self.engine = og.Engine(model)
        self.buffer = self.engine.create_event_buffer(64)

    def run(self, prompts: list[np.ndarray], tokens: int, stagger: float = 0.0) -> dict:
        """Request i is submitted at i * stagger s, between engine steps (as the service does)."""
        start = time.perf_counter()
        state: dict[int, dict] = {}
        waiting = list(enumerate(prompts))
        while waiting or self.engine.has_pending_requests():
            now = time.perf_counter() - start
            while waiting and waiting[0][0] * stagger <= now:
                i, prompt = waiting.pop(0)
                request = self.engine.create_request()
                options = og.TurnOptions(request)
                options.set_max_generated_tokens(tokens)
                options.set_min_generated_tokens(tokens)
                options.set_do_sample(False)
                request.begin_turn(prompt, options)
                state[id(request)] = {
                    "request": request,
                    "arrived": start + i * stagger,
                    "first": None,
                    "tokens": 0,
                    "end": None,
                }
            if not self.engine.has_pending_requests():
                time.sleep(max(0.0, waiting[0][0] * stagger - now))
                continue
            self.engine.run(self.buffer)
            now = time.perf_counter()
            for i in range(len(self.buffer)):
                event = self.buffer[i]
                flags = int(event.flags)
                s = state[id(event.request)]
                if flags & int(og.EngineEventFlags.FAILED):
                    raise RuntimeError(f"engine failed: {event.error_code}")
                if flags & int(og.EngineEventFlags.TOKEN):
                    s["tokens"] += 1
                    s["first"] = s["first"] or now
                if flags & int(og.EngineEventFlags.TURN_FINISHED):
                    s["end"] = now
        wall = time.perf_counter() - start
        results = []
        for s in state.values():
            s["request"].close()
            results.append(
                {
                    "ttft_s": s["first"] - start,
                    "decode_s": s["end"] - s["first"],
                    "tokens": s["tokens"],
                }
            )
        return _aggregate(results, wall)


def _aggregate(results: list[dict], wall: float) -> dict:
    produced = sum(r["tokens"] for r in results)
    one = results[0]
    return {
        "aggregate_tps": produced / wall,
        "ttft_s": statistics.median(r["ttft_s"] for r in results),
        "decode_tps": (one["tokens"] - 1) / one["decode_s"] if one["decode_s"] > 0 else 0.0,
        "tokens": produced,
    }


def probe_engine_on_pruned(path: Path, max_batch: int) -> str:
    """What 0.18's Engine says about a pruned artifact (a 16-token prefill)."""
    model = load(path, max_batch)
    try:
        EngineRunner(model).run([prompt_ids(16, 0)], 2)
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"


def load(path: Path, max_batch: int) -> og.Model:
    config = og.Config(str(path))
    config.overlay(json.dumps({"engine": {"static_batching": {"max_batch_size": max_batch}}}))
    return og.Model(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--stagger", type=float, default=1.5, help="seconds between 4 arrivals")
    parser.add_argument("--stagger-tokens", type=int, default=96)
    args = parser.parse_args()
    paths = ensure_models()
    max_batch = max(args.clients)
    pruned = load(paths[PRUNED_ID], max_batch)
    full = load(paths[FULL_ID], max_batch)
    engine = EngineRunner(full)
    runners = {
        "a_pruned_generators": lambda ps, t, st: generators_concurrent(pruned, ps, t, st),
        "b_full_engine": lambda ps, t, st: engine.run(ps, t, st),
        "c_full_generators": lambda ps, t, st: generators_concurrent(full, ps, t, st),
    }
    # scenario name -> (requests, completion tokens, seconds between arrivals)
    scenarios = {f"burst_{n}": (n, args.tokens, 0.0) for n in args.clients}
    scenarios["staggered_4"] = (4, args.stagger_tokens, args.stagger)
    for run in runners.values():  # warm-up
        run([prompt_ids(16, 1)], 4, 0.0)
    runs: dict[str, dict[str, list[dict]]] = {k: {s: [] for s in scenarios} for k in runners}
    for r in range(args.rounds):
        for scenario, (n, tokens, stagger) in scenarios.items():
            prompts = [prompt_ids(args.prompt, 100 * r + i) for i in range(n)]
            order = list(runners.items())
            for _ in range(r % len(order)):  # rotate who goes first
                order.append(order.pop(0))
            for name, run in order:
                runs[name][scenario].append(run(prompts, tokens, stagger))
                print(f"round {r} {scenario} {name}: {runs[name][scenario][-1]}", file=sys.stderr)
    print(json.dumps(summary(args, runs, scenarios, paths), indent=2))


def summary(args: argparse.Namespace, runs: dict, scenarios: dict, paths: dict) -> dict:
    """Medians per path and scenario, and ratios to path (a) taken round by round (paired)."""

    def med(name: str, scenario: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[name][scenario])

    def paired(name: str, scenario: str, key: str) -> float:
        pairs = zip(runs[name][scenario], runs["a_pruned_generators"][scenario], strict=True)
        return round(statistics.median(x[key] / a[key] for x, a in pairs), 3)

    vocab = json.loads((paths[FULL_ID] / "genai_config.json").read_text())["model"]["vocab_size"]
    result: dict = {
        "onnxruntime_genai": og.__version__,
        "prompt_tokens": args.prompt,
        "rounds": args.rounds,
        "scenarios": {
            k: {"requests": n, "completion_tokens": t, "arrival_every_s": st}
            for k, (n, t, st) in scenarios.items()
        },
        "engine_on_pruned_artifact": probe_engine_on_pruned(paths[PRUNED_ID], 8),
        # fp32 logits the full-logits artifact materialises per prompt token during prefill
        # (the pruned one: one row per request)
        "prefill_logits_mb": {
            "full_per_request": round(args.prompt * vocab * 4 / 2**20, 1),
            "full_per_request_at_2048": round(2048 * vocab * 4 / 2**20, 1),
            "pruned_per_request": round(vocab * 4 / 2**20, 2),
        },
        "paths": {},
        "ratios_to_a_paired": {},
    }
    for name in runs:
        result["paths"][name] = {
            scenario: {
                "aggregate_tps": round(med(name, scenario, "aggregate_tps"), 2),
                "median_ttft_ms": round(1000 * med(name, scenario, "ttft_s"), 1),
                "first_request_decode_tps": round(med(name, scenario, "decode_tps"), 2),
            }
            for scenario in scenarios
        }
        result["ratios_to_a_paired"][name] = {
            scenario: {
                "aggregate_tps": paired(name, scenario, "aggregate_tps"),
                "median_ttft": paired(name, scenario, "ttft_s"),
                "first_request_decode_tps": paired(name, scenario, "decode_tps"),
            }
            for scenario in scenarios
        }
    return result


if __name__ == "__main__":
    main()
