"""Whisper real-time factor on 30 s of audio: ONNX (SpeechEngine) against transformers, one run.

    python benchmarks/bench_whisper.py [--rounds 3] [--tokens 128] [--home DIR]

The model is a synthetic whisper-tiny at its REAL dimensions (4+4 layers, d_model 384,
vocabulary 51865; random weights) compiled at cpu-fp32 and cpu-int4 by the project's compiler
into `--home` (default ~/.cache/foundry-bench/whisper; later runs are cache hits). Random weights
never emit end-of-text, so both sides decode exactly `--tokens` tokens after Whisper's 4-token
prompt (a real 30 s transcript is ~60-120 tokens). Each measurement covers the whole request:
log-mel features (onnxruntime-extensions inside onnxruntime-genai / transformers'
WhisperFeatureExtractor), encoder, greedy decoding. RTF = processing seconds / 30 s of audio
(lower is better). Rounds alternate; medians are reported with ratios. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

AUDIO_SECONDS = 30.0
PROMPT = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"


def audio() -> np.ndarray:
    from runtime.audio import SAMPLE_RATE

    t = np.arange(int(AUDIO_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    signal = 0.3 * np.sin(2 * np.pi * (150 + 20 * t) * t) + 0.05 * np.random.default_rng(
        0
    ).standard_normal(t.shape)
    return signal.astype(np.float32)


def build(home: Path) -> tuple[Path, dict[str, Path]]:
    """The real-dimension synthetic checkpoint (for transformers) and its compiled artifacts."""
    os.environ["FOUNDRY_HOME"] = str(home)
    from compiler.build import BuildRequest, build
    from compiler.synthetic import synthetic_source
    from runtime.store import Store

    source = home / "whisper-tiny-synthetic"
    if not (source / "model.safetensors").exists():
        synthetic_source("whisper-tiny", source)
    results = build(
        BuildRequest(model=str(source), targets=["cpu-fp32", "cpu-int4"], model_id="whisper-bench"),
        Store(),
    )
    return source, {r.target: r.model.path for r in results}


class TorchWhisper:
    def __init__(self, source: Path):
        import torch
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        self.torch = torch
        self.features = WhisperFeatureExtractor.from_pretrained(str(source))
        self.model = WhisperForConditionalGeneration.from_pretrained(
            str(source), dtype=torch.float32
        ).eval()
        config = self.model.generation_config
        config.suppress_tokens = config.begin_suppress_tokens = config.forced_decoder_ids = None
        # Whisper's generate counts the decoder prompt against max_new_tokens; main() measures
        # the shortfall once and asks for that many more, so both sides decode the same count.
        self.extra = 0

    def transcribe(self, pcm: np.ndarray, prompt_ids: list[int], tokens: int) -> int:
        torch = self.torch
        feats = self.features(pcm, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            out = self.model.generate(
                input_features=feats,
                decoder_input_ids=torch.tensor([prompt_ids]),
                generation_config=self.model.generation_config,
                do_sample=False,
                num_beams=1,
                max_new_tokens=tokens + self.extra,
                min_new_tokens=tokens + self.extra,
            )
        return int(out.shape[-1]) - len(prompt_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--home", type=Path, default=Path.home() / ".cache" / "foundry-bench" / "whisper"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for both sides",
    )
    args = parser.parse_args()

    import onnxruntime_genai
    import torch
    import transformers

    from runtime.audio import to_wav_bytes
    from runtime.engines.speech import SpeechEngine
    from runtime.store.metadata import ModelMetadata

    source, artifacts = build(args.home)
    torch.set_num_threads(args.threads)
    pcm = audio()
    wav = to_wav_bytes(pcm)
    engines = {
        name: SpeechEngine(
            artifacts[target], ModelMetadata(task="speech"), model_id=name, threads=args.threads
        )
        for name, target in (("onnx-fp32", "cpu-fp32"), ("onnx-int4", "cpu-int4"))
    }
    prompt_ids = [
        int(engines["onnx-fp32"].tokenizer.to_token_id(t))
        for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
    ]
    reference = TorchWhisper(source)
    runners = {
        "transformers": lambda: reference.transcribe(pcm, prompt_ids, args.tokens),
        **{
            name: (lambda e=e: len(e.generate_ids(wav, PROMPT, max_new_tokens=args.tokens)))
            for name, e in engines.items()
        },
    }
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    tokens: dict[str, int] = {}
    for name, run in runners.items():  # warm-up
        tokens[name] = run()
    reference.extra = max(0, args.tokens - tokens["transformers"])
    tokens["transformers"] = runners["transformers"]()
    for _ in range(args.rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            tokens[name] = run()
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    report = {
        "benchmark": "whisper-rtf",
        "model": "synthetic whisper-tiny, real dimensions (random weights)",
        "audio_seconds": AUDIO_SECONDS,
        "decoded_tokens": tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "tools": {
            "onnxruntime-genai": onnxruntime_genai.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "rtf": {k: round(v / AUDIO_SECONDS, 4) for k, v in median.items()},
        "speedup_vs_transformers": {
            k: round(median["transformers"] / v, 2) for k, v in median.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
