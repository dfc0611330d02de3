"""Validation of embeddings and speech artifacts against their source checkpoints.

Before registration, an artifact is loaded in the runtime's own engine and compared with
the source model run by transformers:
- embeddings: cosine between the engine's pooled vectors and PyTorch's (same pooling,
  sentence-transformers' definition) on a fixed sentence set. fp32 must reach
  `FP32_MIN_COSINE`, int8 `INT8_MIN_COSINE`; the figures go to build.json / the manifest.
- speech: on the same log-mel input and the artifact's own decoder prompt (English-only
  checkpoints take no language/task tokens), `SPEECH_TOKENS` greedy tokens of the artifact
  (onnxruntime-genai) against transformers' `generate`, end-of-text held back on both sides so
  a fixed number is always compared, and the artifact teacher-forced on transformers' tokens:
  top-1 agreement and mean KL divergence per step. fp32 must be equal token for token;
  quantized targets report their figures. Comparing zero tokens is a failure, never a pass
  (a wrong prompt once made real whisper-tiny.en stop at once and "0/0 tokens" passed).
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
    "SPEECH_TOKENS",
    "reference_embeddings",
    "validate_embeddings",
    "validate_media",
    "validate_speech",
]

log = logging.getLogger(__name__)

FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99
# Decoder steps compared on the validation audio (Whisper writes ~3 tokens a second of speech).
SPEECH_TOKENS = 24

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
    from runtime.store.metadata import ModelMetadata

    progress(ProgressEvent("validate", f"cosine against the source on {len(SENTENCES)} sentences"))
    engine = EmbeddingEngine(artifact, ModelMetadata(task="embeddings"), model_id=artifact.name)
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


def speech_inputs(engine: Any, wav: bytes, prompt: str) -> tuple[Any, list[int]]:
    """The artifact's own log-mel features and decoder prompt ids (its multimodal processor)."""
    og = engine._og
    inputs = engine.processor([prompt], audios=og.Audios.open_bytes(wav))
    features = inputs["audio_features"].as_numpy().copy()
    prompt_ids = [int(t) for t in inputs["input_ids"].as_numpy().reshape(-1)]
    return features, prompt_ids


def artifact_forced_logits(engine: Any, wav: bytes, prompt: str, tokens: list[int]) -> Any:
    """The artifact's logits at each step when fed `tokens` (teacher forcing): [len, vocab]."""
    import numpy as np

    og = engine._og
    inputs = engine.processor([prompt], audios=og.Audios.open_bytes(wav))
    params = og.GeneratorParams(engine.model)
    params.set_search_options(max_length=engine.context_length, batch_size=1, do_sample=False)
    generator = og.Generator(engine.model, params)
    generator.set_inputs(inputs)
    rows = []
    for token in tokens:
        rows.append(np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1))
        generator.append_tokens(np.array([[token]], dtype=np.int32))
    del generator
    return np.stack(rows)


def source_greedy(
    source: Path, features: Any, prompt_ids: list[int], new_tokens: int
) -> tuple[list[int], Any]:
    """transformers' greedy `generate` on the same features and prompt: (ids, logits [n, vocab]).

    Whisper's generation_config suppresses tokens (`suppress_tokens`, `begin_suppress_tokens`)
    and forces prompt tokens; onnxruntime-genai applies no such processors, so they are cleared
    to compare the models, and end-of-text waits `new_tokens` steps as it does in the artifact.
    The model is loaded in float32 whatever the checkpoint's config says.
    """
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(str(source), dtype=torch.float32).eval()
    config = model.generation_config
    config.suppress_tokens = None
    config.begin_suppress_tokens = None
    config.forced_decoder_ids = None
    with torch.no_grad():
        out = model.generate(
            input_features=torch.from_numpy(features).float(),
            decoder_input_ids=torch.tensor([prompt_ids], dtype=torch.long),
            generation_config=config,
            do_sample=False,
            num_beams=1,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            output_logits=True,
            return_dict_in_generate=True,
        )
    ids = [int(t) for t in out.sequences[0]]
    ids = ids[len(prompt_ids) :] if ids[: len(prompt_ids)] == prompt_ids else ids
    logits = np.stack([step[0].double().numpy() for step in out.logits])
    return ids, logits


def teacher_forced(want: Any, got: Any, tokens: list[int]) -> dict[str, Any]:
    """Same top-1 token as transformers' raw logits, and mean KL(want || got) in nats, per step.

    Raw logits, not `tokens`: where end-of-text was held back, transformers' token is not its
    top-1, and the artifact should agree with the model, not with the hold-back.
    """
    import numpy as np

    def log_softmax(x: Any) -> Any:
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    p, q = log_softmax(want), log_softmax(got)
    kld = (np.exp(p) * (p - q)).sum(axis=-1)
    top1 = got.argmax(axis=-1) == want.argmax(axis=-1)
    steps = np.arange(len(tokens))
    nll_want, nll_got = -p[steps, tokens].mean(), -q[steps, tokens].mean()
    return {
        "tokens": len(tokens),
        "top1_agreement": round(float(top1.mean()), 4),
        "mean_kld": round(float(kld.mean()), 6),
        "ppl_ratio": round(float(np.exp(nll_got - nll_want)), 6),
        "max_abs_logit_diff": round(float(np.abs(want - got).max()), 6),
    }


def quality_record(forced: dict[str, Any]) -> dict[str, Any]:
    """The teacher-forced figures in the shape chat builds record (`validation.quality`), so the
    build table, `foundry model info` and /v1/models show a quantized Whisper's the same way."""
    return {
        "top1": forced["top1_agreement"],
        "kld": forced["mean_kld"],
        "ppl_ratio": forced["ppl_ratio"],
        "tokens": forced["tokens"],
        "corpus": "validation audio (3 s chirp + noise), transformers fp32 greedy tokens",
    }


def validate_speech(
    artifact: Path,
    source: Path,
    precision: str,
    progress: ProgressFn = silent,
    *,
    new_tokens: int = SPEECH_TOKENS,
) -> dict[str, Any]:
    """Greedy and teacher-forced comparison of the artifact with transformers on one input.

    Raises:
        ValidationFailed: the artifact does not run, no token was compared, or an fp32
            artifact's tokens differ from transformers'.
    """
    from runtime.engines.speech import SpeechEngine
    from runtime.store.metadata import ModelMetadata

    progress(ProgressEvent("validate", "greedy tokens: transformers generate vs onnxruntime-genai"))
    wav = validation_audio()
    try:
        engine = SpeechEngine(artifact, ModelMetadata(task="speech"), model_id=artifact.name)
    except Exception as exc:
        raise ValidationFailed(f"the whisper artifact does not load: {exc}") from exc
    try:
        prompt = engine.prompt("en", "transcribe")
        features, prompt_ids = speech_inputs(engine, wav, prompt)
        want, want_logits = source_greedy(source, features, prompt_ids, new_tokens)
        got = engine.generate_ids(wav, prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        forced = artifact_forced_logits(engine, wav, prompt, want) if want else None
        multilingual = engine.multilingual
    except Exception as exc:
        raise ValidationFailed(f"the whisper artifact does not generate: {exc}") from exc
    finally:
        engine.close()
    record = speech_record(prompt, multilingual, precision, got, want)
    if forced is not None:
        record["teacher_forced"] = teacher_forced(want_logits, forced, want)
        if precision != "fp32":
            record["quality"] = quality_record(record["teacher_forced"])
    progress(ProgressEvent("validate", _speech_summary(record), done=True))
    check_speech(record, precision)
    return record


def speech_record(
    prompt: str, multilingual: bool, precision: str, got: list[int], want: list[int]
) -> dict[str, Any]:
    """The greedy part of the validation record (what build.json and the manifest keep)."""
    total = max(len(got), len(want))
    agree = next(
        (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
        min(len(got), len(want)),
    )
    matched = sum(a == b for a, b in zip(got, want, strict=False))
    return {
        "kind": "speech-greedy-tokens",
        "engine": "onnxruntime-genai",
        "prompt": prompt,
        "multilingual": multilingual,
        "tokens": total,
        "steps": total,
        "matched_prefix": agree,
        "matched_tokens": matched,
        "token_agreement": round(matched / total, 4) if total else 0.0,
        "exact": bool(total) and got == want,
        "required": "exact" if precision == "fp32" else "report",
        "runnable": True,
    }


def _speech_summary(record: dict[str, Any]) -> str:
    text = f"{record['matched_tokens']}/{record['tokens']} greedy tokens agree"
    if forced := record.get("teacher_forced"):
        text += (
            f"; teacher-forced top-1 {forced['top1_agreement']:.1%}, KLD {forced['mean_kld']:.4f}"
        )
    return text


def check_speech(record: dict[str, Any], precision: str) -> None:
    """Raise `ValidationFailed` for a record that compared nothing or an inexact fp32 build."""
    if record["tokens"] == 0:
        raise ValidationFailed(
            "the whisper validation compared zero tokens: neither transformers nor the artifact"
            f" wrote one after {record['prompt']}; nothing was registered",
            hint="check the checkpoint's generation_config.json (is_multilingual, forced ids)",
        )
    if precision == "fp32" and not record["exact"]:
        raise ValidationFailed(
            "fp32 whisper artifact's greedy tokens differ from transformers' at step"
            f" {record['matched_prefix']} of {record['tokens']}; nothing was registered",
        )
