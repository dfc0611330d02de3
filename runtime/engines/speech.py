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
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.audio import SAMPLE_RATE, WINDOW_SECONDS, split_windows, to_wav_bytes
from runtime.engines.gil import let_the_loop_run
from runtime.engines.threads import genai_overlay, resolve_threads
from runtime.errors import InvalidRequest

if TYPE_CHECKING:
    from runtime.store.metadata import ModelMetadata

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
SOT = "<|startoftranscript|>"
NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")  # large-v3 and later, older vocabularies


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


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: UTF-8 length over zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token] over the last axis of og's [1, 1, vocab] logits, in float64."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    top = row.max()
    return float(row[token] - top - np.log(np.exp(row - top).sum()))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Segment:
    """One 30 s window. The figures are Whisper's, measured on this window's decode (None when
    a segment was not decoded, e.g. built by hand): `avg_logprob` is the mean log-probability of
    the tokens written (EOS included, as Whisper's sum / (tokens + 1)); `no_speech_prob` is the
    probability of `<|nospeech|>` (`<|nocaptions|>` in older vocabularies) right after
    `<|startoftranscript|>`, where Whisper reads it; `compression_ratio` is the text's length
    over its zlib-compressed length (high means repetition)."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None


@dataclass(frozen=True)
class WindowDecode:
    """What the decoder wrote for one window, with the figures measured along the way."""

    ids: list[int]  # EOS excluded
    avg_logprob: float | None
    no_speech_prob: float | None


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
        self, path: Path, metadata: ModelMetadata, *, model_id: str, threads: int | None = None
    ):
        import onnxruntime_genai as og

        self.path = Path(path)
        self.metadata = metadata
        self.model_id = model_id
        self._og = og
        config = og.Config(str(self.path))
        # threads.py: per machine, FOUNDRY_THREADS; og's sessions keep og's spinning
        self.threads = resolve_threads(threads, spin_control=False)
        config.overlay(genai_overlay(self.threads, ("encoder", "decoder")))
        self.model = og.Model(config)
        self.processor = self.model.create_multimodal_processor()
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((self.path / "genai_config.json").read_text())
        self.context_length = int(config["model"].get("context_length", 448))
        self.eos_token_id = config["model"].get("eos_token_id")
        self.multilingual = multilingual(self.path)
        self._languages = self._known_languages() if self.multilingual else {"en"}
        self._no_speech_id = self._special_id(*NO_SPEECH_TOKENS)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")
        self._active = 0

    def _special_id(self, *names: str) -> int | None:
        """The id of the first of `names` the tokenizer has as an added token, else None."""
        try:
            data = json.loads((self.path / "tokenizer.json").read_text())
        except (OSError, ValueError):
            return None
        added = {t.get("content", ""): t.get("id") for t in data.get("added_tokens", [])}
        for name in names:
            if isinstance(added.get(name), int):
                return int(added[name])
        return None

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
        return self.decode_window(
            wav,
            prompt,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
        ).ids

    def decode_window(
        self,
        wav: bytes,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
        cancelled: threading.Event | None = None,
    ) -> WindowDecode:
        """Decode one WAV window after `prompt`, measuring Whisper's per-segment figures.

        The processor gets the prompt only up to `<|startoftranscript|>`; the tokens after it are
        forced one step each (set_logits), so the logits at that position, where Whisper reads
        `no_speech_prob`, are seen (og returns the last position's logits only and cannot rewind
        a whisper generator); the decoded tokens are the same as from the whole prompt at once.
        A set `cancelled` stops between steps (the client went away).
        """
        og = self._og
        head, sot, tail = prompt.partition(SOT)
        inputs = self.processor([head + sot], audios=og.Audios.open_bytes(wav))
        forced = [int(t) for t in self.tokenizer.encode(tail)] if tail else []
        prompt_len = int(inputs["input_ids"].as_numpy().shape[-1]) + len(forced)
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
        no_speech = self._no_speech_prob(generator.get_logits()) if sot else None
        for token in forced:
            logits = generator.get_logits()
            only = np.full_like(logits, -np.inf)
            only[..., token] = 0.0
            generator.set_logits(only)
            generator.generate_next_token()
        logprobs: list[float] = []
        while not generator.is_done():
            if cancelled is not None and cancelled.is_set():
                break
            logits = generator.get_logits().copy()  # this step's; the step then picks from them
            generator.generate_next_token()
            logprobs.append(_log_softmax_at(logits, int(generator.get_next_tokens()[0])))
            let_the_loop_run()  # og 0.18 holds the GIL through each step
        ids = [int(t) for t in generator.get_sequence(0)][prompt_len:]
        del generator
        if ids and ids[-1] == self.eos_token_id:
            ids.pop()
        average = sum(logprobs) / len(logprobs) if logprobs else None
        return WindowDecode(ids, average, no_speech)

    def _no_speech_prob(self, logits: np.ndarray) -> float | None:
        if self._no_speech_id is None:
            return None
        return float(np.exp(_log_softmax_at(logits, self._no_speech_id)))

    def transcribe(
        self,
        pcm: np.ndarray,
        *,
        language: str | None = None,
        task: str = "transcribe",
        prompt: str | None = None,
        temperature: float = 0.0,
        cancelled: threading.Event | None = None,
    ) -> Transcript:
        """Transcribe (or translate to English) 16 kHz mono PCM of any length.

        A set `cancelled` stops at the next decode step; what was decoded so far is returned.
        """
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
            decoded = self.decode_window(
                to_wav_bytes(window),
                self.prompt(code, task, context),
                temperature=temperature,
                cancelled=cancelled,
            )
            ids = decoded.ids
            text = self.tokenizer.decode(np.asarray(ids, dtype=np.int32)).strip() if ids else ""
            start = index * WINDOW_SECONDS
            end = min(duration, start + len(window) / SAMPLE_RATE)
            segments.append(
                Segment(
                    index,
                    start,
                    end,
                    text,
                    ids,
                    temperature=temperature,
                    avg_logprob=decoded.avg_logprob,
                    no_speech_prob=decoded.no_speech_prob,
                    compression_ratio=compression_ratio(text),
                )
            )
            context = None  # the user's prompt conditions the first window only
            if cancelled is not None and cancelled.is_set():
                break
        text = " ".join(s.text for s in segments if s.text)
        return Transcript(
            text=text, language=LANGUAGES.get(code, code), duration=duration, segments=segments
        )

    async def atranscribe(self, pcm: np.ndarray, **kwargs: Any) -> Transcript:
        """`transcribe` on the engine's worker thread. Cancelling the awaiting task (the client
        went away) stops the decode at its next step instead of running to the last window."""
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        self._active += 1
        try:
            return await loop.run_in_executor(
                self._executor, lambda: self.transcribe(pcm, cancelled=cancelled, **kwargs)
            )
        except asyncio.CancelledError:
            cancelled.set()
            raise
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
