"""Whisper speech-to-text with onnxruntime-genai: audio in, transcript (and segments) out.

The artifact is the builder's whisper output (`encoder.onnx`, `decoder.onnx`,
`audio_processor_config.json`, `genai_config.json`, tokenizer). Audio arrives as 16 kHz mono
PCM (`runtime/audio.py` decodes uploads); it is cut into 30 s windows, each window becomes a
16-bit WAV that the model's multimodal processor turns into log-mel features, and the decoder
runs from Whisper's prompt: `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>` for a
multilingual checkpoint, `<|startoftranscript|><|notimestamps|>` for an English-only (`.en`)
one, which was never trained with language or task tokens (given them, real whisper-tiny.en
wrote nothing at all). Which one the artifact is comes from its own files (`multilingual()`).
Window transcripts are stitched with a space; each window is one segment (start/end in
seconds). Decoding is greedy at temperature 0 (the default), sampled above it. No logits
processors are applied (transformers' `suppress_tokens` are not), which is what the
compiler's parity check compares. Generation runs on one worker thread per engine, and each
decode step lets go of the GIL (`gil.let_the_loop_run`) so the service answers meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.audio import SAMPLE_RATE, WINDOW_SECONDS, split_windows, to_wav_bytes
from runtime.engines.gil import let_the_loop_run
from runtime.engines.threads import genai_overlay, resolve_threads
from runtime.errors import InvalidRequest

__all__ = ["LANGUAGES", "Segment", "SpeechEngine", "Transcript", "decoder_prompt", "multilingual"]

# Every English-only OpenAI checkpoint (tiny.en .. medium.en) has this vocabulary; multilingual
# ones have 51,865 (51,866 for large-v3): the test transformers and faster-whisper also use.
ENGLISH_ONLY_VOCAB = 51864

# Whisper's language codes -> names (what verbose_json reports); the tokenizer decides which exist.
LANGUAGES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
}
NAMES_TO_CODES = {name: code for code, name in LANGUAGES.items()}


def decoder_prompt(
    language: str | None,
    task: str = "transcribe",
    *,
    context: str | None = None,
    multilingual: bool = True,
) -> str:
    """Whisper's decoder prompt, e.g. `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`.

    English-only checkpoints get `<|startoftranscript|><|notimestamps|>` (their
    generation_config forces `<|notimestamps|>` at position 1). `context` (OpenAI's `prompt`:
    earlier text, names, spelling) goes before it after `<|startofprev|>`, as Whisper was trained.
    """
    prefix = f"<|startofprev|> {context.strip()}" if context and context.strip() else ""
    if not multilingual:
        return f"{prefix}<|startoftranscript|><|notimestamps|>"
    code = (language or "en").lower()
    code = NAMES_TO_CODES.get(code, code)
    return f"{prefix}<|startoftranscript|><|{code}|><|{task}|><|notimestamps|>"


def multilingual(artifact: Path) -> bool:
    """Whether the artifact's checkpoint takes language and task tokens in its prompt.

    The source's `generation_config.json` (the whisper backend keeps it) says so in
    `is_multilingual`; an artifact without one (imported, or built before it was kept) is
    English-only when its vocabulary is the `.en` one.
    """
    generation = _read_json(artifact / "generation_config.json")
    if isinstance(generation.get("is_multilingual"), bool):
        return bool(generation["is_multilingual"])
    vocab = _read_json(artifact / "genai_config.json").get("model", {}).get("vocab_size")
    return vocab != ENGLISH_ONLY_VOCAB


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment]


class SpeechEngine:
    """One whisper artifact; `transcribe()` is synchronous, `atranscribe()` runs off the loop."""

    task = "speech"

    def __init__(
        self, path: Path, metadata: dict[str, Any] | None = None, *, threads: int | None = None
    ):
        import onnxruntime_genai as og

        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self._og = og
        config = og.Config(str(self.path))
        self.threads = resolve_threads(threads)  # threads.py: per machine, FOUNDRY_THREADS
        config.overlay(genai_overlay(self.threads, ("encoder", "decoder")))
        self.model = og.Model(config)
        self.processor = self.model.create_multimodal_processor()
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((self.path / "genai_config.json").read_text())
        self.context_length = int(config["model"].get("context_length", 448))
        self.eos_token_id = config["model"].get("eos_token_id")
        self.multilingual = multilingual(self.path)
        self._languages = self._known_languages() if self.multilingual else {"en"}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")
        self._active = 0

    def _known_languages(self) -> set[str]:
        """Language codes whose `<|xx|>` token the tokenizer has (a synthetic one may lack some)."""
        try:
            data = json.loads((self.path / "tokenizer.json").read_text())
        except (OSError, ValueError):
            return set(LANGUAGES)
        added = {t.get("content", "") for t in data.get("added_tokens", [])}
        return {code for code in LANGUAGES if f"<|{code}|>" in added}

    def check_language(self, language: str | None) -> str:
        """The language code to prompt with (default English).

        Raises:
            InvalidRequest: a language Whisper (or this tokenizer) does not know.
        """
        code = (language or "en").strip().lower()
        code = NAMES_TO_CODES.get(code, code)
        if code not in self._languages and not self.multilingual and code in LANGUAGES:
            raise InvalidRequest(
                f"language {language!r} is not supported: this model is English-only",
                hint="use a multilingual Whisper (one without '.en'), or language 'en'",
                param="language",
            )
        if code not in self._languages:
            raise InvalidRequest(
                f"language {language!r} is not supported; use an ISO-639-1 code like 'en'",
                param="language",
            )
        return code

    def prompt(
        self, language: str | None, task: str = "transcribe", context: str | None = None
    ) -> str:
        """This artifact's decoder prompt (language and task only where it is multilingual).

        Raises:
            InvalidRequest: translation asked of an English-only model (it writes English only).
        """
        if task == "translate" and not self.multilingual:
            raise InvalidRequest(
                "this model is English-only and cannot translate",
                hint="use a multilingual Whisper (one without '.en') for /v1/audio/translations",
                param="model",
            )
        return decoder_prompt(language, task, context=context, multilingual=self.multilingual)

    # --- one window ------------------------------------------------------------------
    def generate_ids(
        self,
        wav: bytes,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
    ) -> list[int]:
        """Token ids the decoder writes after `prompt` for one WAV window (EOS excluded).

        `min_new_tokens` holds EOS back that long (the compiler's check compares a fixed count).
        """
        og = self._og
        inputs = self.processor([prompt], audios=og.Audios.open_bytes(wav))
        prompt_len = int(inputs["input_ids"].as_numpy().shape[-1])
        limit = (
            self.context_length
            if max_new_tokens is None
            else min(self.context_length, prompt_len + max_new_tokens)
        )
        params = og.GeneratorParams(self.model)
        options: dict[str, Any] = {"max_length": limit, "batch_size": 1}
        if min_new_tokens:
            options["min_length"] = min(limit, prompt_len + min_new_tokens)
        if temperature > 0:
            options.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
        else:
            options.update(do_sample=False)
        params.set_search_options(**options)
        generator = og.Generator(self.model, params)
        generator.set_inputs(inputs)
        while not generator.is_done():
            generator.generate_next_token()
            let_the_loop_run()  # og 0.18 holds the GIL through each step
        ids = [int(t) for t in generator.get_sequence(0)][prompt_len:]
        del generator
        if ids and ids[-1] == self.eos_token_id:
            ids.pop()
        return ids

    def transcribe(
        self,
        pcm: np.ndarray,
        *,
        language: str | None = None,
        task: str = "transcribe",
        prompt: str | None = None,
        temperature: float = 0.0,
    ) -> Transcript:
        """Transcribe (or translate to English) 16 kHz mono PCM of any length."""
        if task not in {"transcribe", "translate"}:
            raise InvalidRequest(
                f"task must be 'transcribe' or 'translate', got {task!r}", param="task"
            )
        code = self.check_language(language)
        self.prompt(code, task)  # refuses what this model cannot do before any decoding
        duration = len(pcm) / SAMPLE_RATE
        segments: list[Segment] = []
        context = prompt
        for index, window in enumerate(split_windows(pcm)):
            ids = self.generate_ids(
                to_wav_bytes(window),
                self.prompt(code, task, context),
                temperature=temperature,
            )
            text = self.tokenizer.decode(np.asarray(ids, dtype=np.int32)).strip() if ids else ""
            start = index * WINDOW_SECONDS
            segments.append(
                Segment(index, start, min(duration, start + len(window) / SAMPLE_RATE), text, ids)
            )
            context = None  # the user's prompt conditions the first window only
        text = " ".join(s.text for s in segments if s.text)
        return Transcript(
            text=text, language=LANGUAGES.get(code, code), duration=duration, segments=segments
        )

    async def atranscribe(self, pcm: np.ndarray, **kwargs: Any) -> Transcript:
        loop = asyncio.get_running_loop()
        self._active += 1
        try:
            return await loop.run_in_executor(
                self._executor, lambda: self.transcribe(pcm, **kwargs)
            )
        finally:
            self._active -= 1

    def active_requests(self) -> int:
        """Requests in flight (the model manager never evicts a model that has some)."""
        return self._active

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.processor = None
        self.tokenizer = None
        self.model = None
