"""The service's overhead over onnxruntime-genai, and its throughput under concurrency.

    python benchmarks/bench_serve.py [--tokens 64] [--prompt-words 100] [--rounds 3]

On the Qwen2.5-0.5B-dimension synthetic model at cpu-int4: what
`foundry-build qwen2.5-0.5b --synthetic --target cpu-int4` registers, built by
common.synthetic_model into the benchmarks' private FOUNDRY_HOME (once; later runs reuse it):
* service start (`foundry service start`, which returns on the first /health) and model
  load (`GET /openai/load/{model}`) wall times;
* time to first token and decode tok/s of one streaming chat completion (greedy,
  `ignore_eos` so every run has the same length) through the service, against the same
  prompt tokens generated directly with onnxruntime-genai in this process (og.Generator:
  the path the service takes for a lone request) at the service's thread count, alternated;
* aggregate completion tok/s with 1, 4 and 8 concurrent streaming clients.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import onnxruntime_genai as og
from common import BENCH_HOME as HOME
from common import SYNTHETIC_ID as MODEL_ID
from common import bin_path, concurrent_streams, synthetic_model, timed_greedy, timed_stream

from runtime.engines.threads import genai_overlay, session_threads

TEXT = "the museum opens at nine and the guided tour of the east wing takes about ninety minutes"
WORDS = TEXT.split()


def prompt_tokens(artifact: Path, words: int) -> list[int]:
    """The token ids the service computes for this chat (same template, same tokenizer)."""
    from tokenizers import Tokenizer

    from runtime.engines.prompt import load_chat_template

    text = load_chat_template(artifact).render(messages(words))
    return (
        Tokenizer.from_file(str(artifact / "tokenizer.json"))
        .encode(text, add_special_tokens=False)
        .ids
    )


def messages(words: int) -> list[dict]:
    body = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    return [{"role": "user", "content": body}]


async def served(base_url: str, words: int, tokens: int) -> dict:
    body = {
        "model": MODEL_ID,
        "messages": messages(words),
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    return await timed_stream(base_url, "/v1/chat/completions", body)


async def concurrent(base_url: str, clients: int, words: int, tokens: int) -> dict:
    body = {"model": MODEL_ID, "messages": messages(words), "max_tokens": tokens}
    body |= {"temperature": 0, "ignore_eos": True}
    run = await concurrent_streams(base_url, "/v1/chat/completions", [body] * clients, False)
    return {
        "clients": clients,
        "completion_tokens": run["tokens"],
        "wall_s": round(run["wall_s"], 2),
        "aggregate_tps": round(run["aggregate_tps"], 1),
        "median_ttft_ms": round(1000 * run["median_ttft_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "FOUNDRY_HOME": str(HOME)}
    env.pop("FOUNDRY_API_KEY", None)
    cached = synthetic_model(HOME, MODEL_ID)
    model = {"path": cached.path, "size": cached.size}
    subprocess.run([bin_path("foundry"), "service", "stop"], env=env, capture_output=True)

    started = time.perf_counter()
    subprocess.run(
        [bin_path("foundry"), "service", "start"], env=env, check=True, capture_output=True
    )
    start_s = time.perf_counter() - started
    base_url = "http://127.0.0.1:{port}".format(**json.loads((HOME / "service.json").read_text()))
    try:
        started = time.perf_counter()
        httpx.get(f"{base_url}/openai/load/{MODEL_ID}", timeout=600).raise_for_status()
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        config = og.Config(str(model["path"]))  # the service's thread count (threads.py)
        config.overlay(genai_overlay(session_threads()))
        og_model = og.Model(config)
        direct_load_s = time.perf_counter() - started
        prompt = prompt_tokens(model["path"], args.prompt_words)

        async def one() -> dict:
            return await served(base_url, args.prompt_words, args.tokens)

        asyncio.run(one())  # warm-up, both sides
        timed_greedy(og_model, prompt, 8)
        service_runs, direct_runs = [], []
        for _ in range(args.rounds):
            service_runs.append(asyncio.run(one()))
            direct_runs.append(timed_greedy(og_model, prompt, args.tokens))
        del og_model
        scaling = [
            asyncio.run(concurrent(base_url, n, args.prompt_words, args.tokens)) for n in (1, 4, 8)
        ]
    finally:
        subprocess.run([bin_path("foundry"), "service", "stop"], env=env, capture_output=True)

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    result = {
        "model": MODEL_ID,
        "artifact_bytes": model["size"],
        "prompt_tokens": len(prompt),
        "completion_tokens": args.tokens,
        "rounds": args.rounds,
        "service_start_to_health_s": round(start_s, 2),
        "model_load_s": {"service": round(load_s, 2), "og_model_direct": round(direct_load_s, 2)},
        "ttft_ms": {
            "service": round(1000 * median(service_runs, "ttft_s"), 1),
            "direct": round(1000 * median(direct_runs, "ttft_s"), 1),
        },
        "decode_tps": {
            "service": round(median(service_runs, "decode_tps"), 1),
            "direct": round(median(direct_runs, "decode_tps"), 1),
        },
        "concurrency": scaling,
    }
    result["decode_ratio_service_over_direct"] = round(
        result["decode_tps"]["service"] / result["decode_tps"]["direct"], 3
    )
    result["ttft_ratio_direct_over_service"] = round(
        result["ttft_ms"]["direct"] / result["ttft_ms"]["service"], 3
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
