"""Per-token cost of guidance: decode tok/s with and without a grammar, alternated in one run.

    python benchmarks/bench_guidance.py [--artifact DIR] [--tokens 128] [--rounds 3]

Without `--artifact` it uses the Qwen2.5-0.5B-dimension synthetic model (real vocabulary
size, random weights) at cpu-int4, built once by common.synthetic_model (what `foundry-build
qwen2.5-0.5b --synthetic --target cpu-int4` registers) into the benchmarks' FOUNDRY_HOME.
Each round runs the same greedy decode of `--tokens` tokens unguided, with a JSON-schema
grammar, and with a forced tool-call Lark grammar (runtime/tools/grammar.py), on a fresh
`og.Generator` each; the grammars cannot finish before `--tokens` (a long minLength string),
so every run decodes the same count. Time per token excludes the prefill. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
from common import synthetic_model, timed_greedy

from runtime.tools.grammar import json_schema_guidance, marker_tokens, tool_call_guidance

LONG = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 20000}},
    "required": ["text"],
    "additionalProperties": False,
}
TOOL = [{"type": "function", "function": {"name": "write", "parameters": LONG}}]


def decode(
    model: og.Model, prompt: np.ndarray, tokens: int, guidance: tuple[str, str] | None
) -> dict:
    """Unguided runs may stop at EOS (no min_length); the grammars cannot finish early."""
    hook = (lambda params: params.set_guidance(*guidance)) if guidance else None
    return timed_greedy(model, prompt, tokens, hook, fixed_length=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    artifact = args.artifact or synthetic_model().path
    model = og.Model(str(artifact))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.encode(
        "<|im_start|>user\nWrite a long text.<|im_end|>\n<|im_start|>assistant\n"
    )
    modes = {
        "unguided": None,
        "json_schema": json_schema_guidance(LONG),
        "tool_call_lark": tool_call_guidance("qwen", TOOL, tokens=marker_tokens(artifact)),
    }
    decode(model, prompt, 8, None)  # warm-up
    runs: dict[str, list[dict]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, guidance in modes.items():  # alternated, so drift hits every mode alike
            runs[name].append(decode(model, prompt, args.tokens, guidance))
    result = {"artifact": str(artifact), "tokens": args.tokens, "rounds": args.rounds, "modes": {}}
    base = statistics.median(r["decode_tps"] for r in runs["unguided"])
    for name, rows in runs.items():
        tok_s = statistics.median(r["decode_tps"] for r in rows)
        result["modes"][name] = {
            "decode_tok_s": round(tok_s, 2),
            "ms_per_token": round(1000 / tok_s, 3),
            "ratio_to_unguided": round(tok_s / base, 3),
            "ttft_ms": round(1000 * statistics.median(r["ttft_s"] for r in rows), 1),
            "tokens": [r["tokens"] for r in rows],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
