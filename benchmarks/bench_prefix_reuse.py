"""Time to first token across chat turns, with and without prefix reuse, alternated in one run.

    python benchmarks/bench_prefix_reuse.py [--artifact DIR] [--history 1000] [--rounds 3]

`--artifact` is an artifact folder, e.g. what `foundry-build qwen2.5-0.5b --synthetic --target
cpu-int4` registered (`foundry cache location` + snapshot); without it the Qwen2.5-0.5B-dimension
synthetic model at int4 is built once by common.synthetic_model (the benchmarks' FOUNDRY_HOME).
A conversation starts with a ~`--history`-token system prompt and earlier exchanges, then runs
5 user turns (greedy, 16 new tokens each), each turn resending the whole conversation with the
model's real replies, as a chat client does. Each
round runs the conversation once with prefix reuse (runtime/engines/prefix_cache.py) and once
without (the kept states dropped before every turn, so the same path prefills everything),
in alternation. The ChatEngine is the service's own, driven in-process. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from common import synthetic_model

from runtime.engines.base import GenerationParams
from runtime.engines.chat import ChatEngine
from runtime.store.metadata import ModelMetadata

FILLER = (
    "The museum opens at nine and the guided tour of the east wing takes about ninety minutes, "
    "so plan lunch near the river before the afternoon visit to the old town. "
)
USER_TURNS = [
    "What should I see first?",
    "And after lunch?",
    "Is the tower worth it?",
    "How long is the walk back?",
    "Summarise the day in one line.",
]


def history(engine: ChatEngine, tokens: int) -> list[dict]:
    """A system prompt and earlier exchanges that render to about `tokens` tokens."""
    messages = [{"role": "system", "content": "You are a travel assistant. " + FILLER * 2}]
    while len(engine.encode(engine.render_prompt(messages))) < tokens:
        messages += [
            {"role": "user", "content": "Tell me more. " + FILLER},
            {"role": "assistant", "content": FILLER},
        ]
    return messages


async def turn(engine: ChatEngine, messages: list[dict], max_tokens: int) -> dict:
    prompt = engine.encode(engine.render_prompt(messages))
    start = time.perf_counter()
    first, text, last = None, "", None
    async for chunk in engine.stream(
        prompt, GenerationParams(max_tokens=max_tokens, temperature=0)
    ):
        if first is None and chunk.token_ids:
            first = time.perf_counter() - start
        text += chunk.text
        last = chunk
    return {
        "ttft_s": first,
        "prompt": len(prompt),
        "cached": last.cached_tokens if last else 0,
        "text": text,
    }


def conversation(engine: ChatEngine, base: list[dict], reuse: bool, max_tokens: int) -> list[dict]:
    messages, rows = list(base), []
    engine.prefix_cache.clear()
    for user in USER_TURNS:
        if not reuse:
            engine.prefix_cache.clear()
        messages.append({"role": "user", "content": user})
        row = asyncio.run(turn(engine, messages, max_tokens))
        rows.append(row)
        messages.append({"role": "assistant", "content": row["text"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    artifact = args.artifact or synthetic_model().path
    engine = ChatEngine(artifact, ModelMetadata(tool_parser="qwen"), model_id="bench")
    try:
        base = history(engine, args.history)
        conversation(engine, base[:2], True, 4)  # warm-up
        runs = {"reuse": [], "cold": []}
        for _ in range(args.rounds):
            for mode in ("reuse", "cold"):
                runs[mode].append(conversation(engine, base, mode == "reuse", args.max_tokens))
    finally:
        engine.close()
    result: dict = {"artifact": str(artifact), "rounds": args.rounds, "turns": {}}
    same = all(
        a["text"] == b["text"]
        for r, c in zip(runs["reuse"], runs["cold"], strict=True)
        for a, b in zip(r, c, strict=True)
    )
    for index in (1, 4):  # turns 2 and 5
        reuse = statistics.median(r[index]["ttft_s"] for r in runs["reuse"])
        cold = statistics.median(r[index]["ttft_s"] for r in runs["cold"])
        result["turns"][f"turn_{index + 1}"] = {
            "prompt_tokens": runs["reuse"][0][index]["prompt"],
            "cached_tokens": runs["reuse"][0][index]["cached"],
            "ttft_ms_reuse": round(1000 * reuse, 1),
            "ttft_ms_cold": round(1000 * cold, 1),
            "speedup": round(cold / reuse, 2),
        }
    result["same_replies_with_and_without_reuse"] = same
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
