"""Validation of embeddings and speech artifacts against their source checkpoints.

Before registration, an artifact is loaded in the runtime's own engine and compared with
the source model run by transformers:
- embeddings: cosine between the engine's pooled vectors and PyTorch's (same pooling,
  sentence-transformers' definition) on a fixed sentence set. fp32 must reach
  `FP32_MIN_COSINE`, int8 `INT8_MIN_COSINE`; the figures go to build.json / the manifest.
- speech: greedy token ids of the artifact (onnxruntime-genai) against transformers'
  `generate` on the same log-mel input. fp32 must be equal; quantized targets report
  agreement.
A failed check raises `ValidationFailed`, so nothing is registered. torch/transformers are
imported inside the functions (this module is part of the heavy compiler half).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from runtime.errors import ValidationFailed
from runtime.progress import ProgressEvent, ProgressFn, silent

__all__ = [
    "FP32_MIN_COSINE",
    "INT8_MIN_COSINE",
    "SENTENCES",
    "reference_embeddings",
    "validate_embeddings",
    "validate_media",
    "validate_speech",
]

log = logging.getLogger(__name__)

FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99

# A fixed, varied sentence set: short and long, punctuation, numbers, non-ASCII, a repeat-heavy one.
SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings map text to points in a vector space where similar meanings lie close together.",
    "hello",
    "Paris is the capital of France and home to many museums, including the Louvre.",
    "How do I reset my password if I no longer have access to my email account?",
    "The mitochondria is the powerhouse of the cell.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out first.",
    "Café, naïve, coöperate and résumé carry diacritics.",
    "def add(a, b): return a + b  # a tiny Python function",
    "Stock prices fell 3.2% on Tuesday after the quarterly earnings report.",
    "buy buy buy buy buy buy buy buy buy buy buy buy",
    "Local inference keeps private documents on the user's own machine.",
    "What is the weather like in Seattle in November?",
    "Whales are mammals that breathe air through a blowhole.",
    "Retrieval-augmented generation finds relevant passages before answering a question. " * 3,
]


def reference_embeddings(
    source: Path, sentences: list[str], *, mode: str, normalize: bool, max_length: int
) -> Any:
    """sentence-transformers' output computed with transformers: encoder, pooling, normalise."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from runtime.engines.embeddings import normalize as l2
    from runtime.engines.embeddings import pool

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModel.from_pretrained(str(source)).eval()
    encoded = tokenizer(
        sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state.float().numpy()
    vectors = pool(hidden, encoded["attention_mask"].numpy(), mode).astype(np.float64)
    return l2(vectors) if normalize else vectors


def validate_embeddings(
    artifact: Path, source: Path, precision: str, progress: ProgressFn = silent
) -> dict[str, Any]:
    """Min/mean cosine of the artifact's vectors against the source's on `SENTENCES`.

    Raises:
        ValidationFailed: min cosine under the bar for `precision` (nothing is registered).
    """
    import numpy as np

    from runtime.engines.embeddings import EmbeddingEngine

    progress(ProgressEvent("validate", f"cosine against the source on {len(SENTENCES)} sentences"))
    engine = EmbeddingEngine(artifact, {})
    try:
        got = np.asarray(engine.embed(SENTENCES), dtype=np.float64)
        mode, normalize, max_length = engine.mode, engine.normalize, engine.max_length
        dimension = engine.dimension
    finally:
        engine.close()
    want = reference_embeddings(
        source, SENTENCES, mode=mode, normalize=normalize, max_length=max_length
    )
    cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    bar = FP32_MIN_COSINE if precision in {"fp32", "fp16", "bf16"} else INT8_MIN_COSINE
    record = {
        "kind": "embeddings-cosine",
        "sentences": len(SENTENCES),
        "min_cosine": round(float(cosine.min()), 10),
        "mean_cosine": round(float(cosine.mean()), 10),
        "threshold": bar,
        "dimension": dimension,
        "pooling": mode,
        "normalize": normalize,
        "passed": bool(cosine.min() >= bar),
    }
    progress(ProgressEvent("validate", f"min cosine {record['min_cosine']}", done=True))
    if not record["passed"]:
        raise ValidationFailed(
            f"embeddings differ from the source: min cosine {record['min_cosine']} < {bar}"
            f" ({precision})",
            hint="try the cpu-fp32 target, or keep more MatMuls in fp32 (recipe option keep_fp32)",
        )
    return record


def validate_media(
    artifact: Path, source: Path, precision: str, progress: ProgressFn = silent
) -> dict[str, Any]:
    """Dispatch on what the backend wrote: `pooling.json` = embeddings, else speech."""
    if (artifact / "pooling.json").is_file():
        return validate_embeddings(artifact, source, precision, progress)
    return validate_speech(artifact, source, precision, progress)


def validation_audio(seconds: float = 3.0) -> bytes:
    """A fixed 16 kHz WAV: a chirp with seeded noise (varied enough that tokens differ by step)."""
    import numpy as np

    from runtime.audio import SAMPLE_RATE, to_wav_bytes

    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    noise = 0.05 * np.random.default_rng(0).standard_normal(t.shape)
    return to_wav_bytes((chirp + noise).astype(np.float32))


def artifact_features(artifact: Path, wav: bytes, prompt: str) -> tuple[Any, list[int]]:
    """The artifact's own log-mel features and decoder prompt ids (its multimodal processor)."""
    import onnxruntime_genai as og

    model = og.Model(str(artifact))
    processor = model.create_multimodal_processor()
    inputs = processor([prompt], audios=og.Audios.open_bytes(wav))
    features = inputs["audio_features"].as_numpy().copy()
    prompt_ids = [int(t) for t in inputs["input_ids"].as_numpy().reshape(-1)]
    del inputs, processor, model
    return features, prompt_ids


def artifact_greedy(artifact: Path, wav: bytes, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy ids after the prompt, as the runtime's SpeechEngine generates them."""
    from runtime.engines.speech import SpeechEngine

    engine = SpeechEngine(artifact, {})
    try:
        return engine.generate_ids(wav, prompt, max_new_tokens=max_new_tokens)
    finally:
        engine.close()


def source_greedy(
    source: Path, features: Any, prompt_ids: list[int], max_new_tokens: int
) -> list[int]:
    """transformers' `generate` (greedy) on the same log-mel features and decoder prompt.

    Whisper's generation_config suppresses tokens (`suppress_tokens`, `begin_suppress_tokens`);
    onnxruntime-genai applies no such processors, so both are cleared to compare the models.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(str(source), dtype=torch.float32).eval()
    config = model.generation_config
    config.suppress_tokens = None
    config.begin_suppress_tokens = None
    config.forced_decoder_ids = None
    with torch.no_grad():
        out = model.generate(
            input_features=torch.from_numpy(features),
            decoder_input_ids=torch.tensor([prompt_ids], dtype=torch.long),
            generation_config=config,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
        )
    ids = [int(t) for t in out[0]]
    return ids[len(prompt_ids) :] if ids[: len(prompt_ids)] == prompt_ids else ids


def validate_speech(
    artifact: Path,
    source: Path,
    precision: str,
    progress: ProgressFn = silent,
    *,
    max_new_tokens: int = 24,
) -> dict[str, Any]:
    """Greedy token ids of the artifact against transformers' `generate` on one log-mel input.

    Raises:
        ValidationFailed: the artifact does not run, or an fp32 artifact's tokens differ.
    """
    from runtime.engines.speech import decoder_prompt

    progress(ProgressEvent("validate", "greedy tokens: transformers generate vs onnxruntime-genai"))
    wav = validation_audio()
    prompt = decoder_prompt("en", "transcribe")
    try:
        features, prompt_ids = artifact_features(artifact, wav, prompt)
        got = artifact_greedy(artifact, wav, prompt, max_new_tokens)
    except Exception as exc:
        raise ValidationFailed(f"the whisper artifact does not load or generate: {exc}") from exc
    want = source_greedy(source, features, prompt_ids, max_new_tokens)
    agree = next(
        (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
        min(len(got), len(want)),
    )
    total = max(len(got), len(want))
    matched = sum(a == b for a, b in zip(got, want, strict=False))
    record = {
        "kind": "speech-greedy-tokens",
        "engine": "onnxruntime-genai",
        "prompt": prompt,
        "tokens": total,
        "steps": total,
        "matched_prefix": agree,
        "matched_tokens": matched,
        "token_agreement": round(matched / total, 4) if total else 1.0,
        "exact": got == want,
        "required": "exact" if precision == "fp32" else "report",
        "runnable": True,
    }
    progress(ProgressEvent("validate", f"{agree}/{total} greedy tokens agree", done=True))
    if precision == "fp32" and got != want:
        raise ValidationFailed(
            f"fp32 whisper artifact's greedy tokens differ from transformers' at step {agree}"
            f" of {total}; "
            "nothing was registered",
        )
    return record
