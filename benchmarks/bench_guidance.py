"""Per-token cost of guidance: decode tok/s with and without a grammar, alternated in one run.

    python benchmarks/bench_guidance.py [--artifact DIR] [--tokens 128] [--rounds 3]

Without `--artifact` it builds the Qwen2.5-0.5B-dimension synthetic model (real vocabulary
size, random weights) at int4 with onnxruntime-genai's builder into ~/.cache/foundry-bench.
Each round runs the same greedy decode of `--tokens` tokens unguided, with a JSON-schema
grammar, and with a forced tool-call Lark grammar (runtime/tools/grammar.py), on a fresh
`og.Generator` each; the grammars cannot finish before `--tokens` (a long minLength string),
so every run decodes the same count. Time per token excludes the prefill. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime_genai as og

from runtime.tools.grammar import json_schema_guidance, marker_tokens, tool_call_guidance

LONG = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 20000}},
    "required": ["text"],
    "additionalProperties": False,
}
TOOL = [{"type": "function", "function": {"name": "write", "parameters": LONG}}]


def default_artifact() -> Path:
    """The 0.5B-dimension synthetic model at int4, built once."""
    import subprocess
    import sys

    root = Path.home() / ".cache" / "foundry-bench"
    artifact = root / "qwen2.5-0.5b-synthetic-cpu-int4"
    if not (artifact / "genai_config.json").exists():
        from compiler.synthetic import synthetic_source

        source = synthetic_source("qwen2.5-0.5b", root / "qwen2.5-0.5b-synthetic-source")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                str(source),
                "-o",
                str(artifact),
                "-p",
                "int4",
                "-e",
                "cpu",
            ],
            check=True,
        )
    return artifact


def decode(model, prompt: np.ndarray, tokens: int, guidance: tuple[str, str] | None) -> dict:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + tokens)
    if guidance:
        params.set_guidance(*guidance)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(prompt)
    generator.generate_next_token()
    first = time.perf_counter()
    produced = 1
    while not generator.is_done() and produced < tokens:
        generator.generate_next_token()
        produced += 1
    end = time.perf_counter()
    return {
        "ttft_s": first - start,
        "decode_tok_s": (produced - 1) / (end - first),
        "tokens": produced,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    artifact = args.artifact or default_artifact()
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
    base = statistics.median(r["decode_tok_s"] for r in runs["unguided"])
    for name, rows in runs.items():
        tok_s = statistics.median(r["decode_tok_s"] for r in rows)
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
