"""Wire types and pure conversions for `/v1/embeddings` and `/v1/audio/*` (OpenAI's shapes).

OpenAI's `input` is one of four shapes (string, strings, token ids, lists of token ids);
msgspec cannot express a union of several array types, so it is decoded as `Any` and checked
by `EmbeddingRequest.inputs()` with one clear message.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from runtime.errors import InvalidRequest
from runtime.service.bounds import MAX_INPUTS

if TYPE_CHECKING:
    import numpy as np

    from runtime.engines.speech import Transcript

__all__ = [
    "AUDIO_FORM",
    "RESPONSE_FORMATS",
    "TEXT_ANSWERS",
    "EmbeddingList",
    "EmbeddingRequest",
    "Transcription",
    "embedding_response",
    "render_transcript",
]

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TEXT_ANSWERS = ("text/plain", "text/vtt")  # text and srt; vtt (render_transcript)

_TEXT = {"type": "string", "minLength": 1}
_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_MANY = {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS}
_SHAPES = [_TEXT, {**_MANY, "items": _TEXT}, {**_IDS, **_MANY}, {**_MANY, "items": _IDS}]
# What `inputs()` accepts, for the OpenAPI document (msgspec decodes `input` as Any).
EmbeddingInput = Annotated[Any, Meta(extra_json_schema={"extra": {"any_of": _SHAPES}})]
# The audio routes' multipart form, as `_speech` reads it (other fields are ignored).
AUDIO_FORM = {
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string", "minLength": 1},
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"enum": list(RESPONSE_FORMATS)},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["file", "model"],
}


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None

    def inputs(self) -> list[str] | list[list[int]]:
        """The input as a list of strings or a list of token-id lists.

        Raises:
            InvalidRequest: empty input or strings, mixed shapes, bad ids, too many inputs.
        """
        value = self.input
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise InvalidRequest(
                "'input' must be a non-empty string, array of strings, array of token ids, "
                "or array of token-id arrays",
                param="input",
            )
        if len(value) > MAX_INPUTS:
            raise InvalidRequest(
                f"'input' has {len(value)} items; at most {MAX_INPUTS} are allowed", param="input"
            )
        if all(isinstance(item, str) for item in value):
            if any(not item for item in value):
                raise InvalidRequest("'input' contains an empty string", param="input")
            return list(value)
        if all(_is_token(item) for item in value):
            return [list(value)]
        if all(
            isinstance(item, list) and item and all(_is_token(t) for t in item) for item in value
        ):
            return [list(item) for item in value]
        raise InvalidRequest(
            "'input' mixes shapes or holds something other than strings or non-negative "
            "integer token ids",
            param="input",
        )


def _is_token(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool) and item >= 0


class Embedding(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def embedding_response(
    vectors: np.ndarray, *, model: str, encoding_format: str, prompt_tokens: int
) -> EmbeddingList:
    """OpenAI's embeddings list; base64 is little-endian float32 (what the openai client reads)."""
    import numpy as np

    def encoded(row: np.ndarray) -> list[float] | str:
        if encoding_format == "base64":
            return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
        return [float(x) for x in row]

    return EmbeddingList(
        data=[Embedding(index=i, embedding=encoded(row)) for i, row in enumerate(vectors)],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
    )


class TranscriptSegment(msgspec.Struct, kw_only=True):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float | None  # measured on the decode (engines/speech.py)
    compression_ratio: float | None
    no_speech_prob: float | None


class Transcription(msgspec.Struct, kw_only=True):
    """`json` sends `text` alone; `verbose_json` every field."""

    task: str | UnsetType = UNSET
    language: str | UnsetType = UNSET
    duration: float | UnsetType = UNSET
    text: str
    segments: list[TranscriptSegment] | UnsetType = UNSET


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render_transcript(transcript: Transcript, response_format: str, task: str) -> tuple[Any, str]:
    """(body, media type) for one of `RESPONSE_FORMATS`."""
    if response_format == "json":
        return Transcription(text=transcript.text), "application/json"
    if response_format == "text":
        return transcript.text + "\n", "text/plain"
    if response_format == "srt":
        cues = [
            f"{s.id + 1}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
            for s in transcript.segments
        ]
        return "\n".join(cues) + ("\n" if cues else ""), "text/plain"
    if response_format == "vtt":
        cues = [
            f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n"
            for s in transcript.segments
        ]
        return "WEBVTT\n\n" + "\n".join(cues), "text/vtt"
    # each segment's own fields (engines/speech.py Segment), and its start in 10 ms frames
    segments = [
        TranscriptSegment(seek=round(s.start * 100), **dataclasses.asdict(s))
        for s in transcript.segments
    ]
    verbose = Transcription(
        task=task,
        language=transcript.language,
        duration=transcript.duration,
        text=transcript.text,
        segments=segments,
    )
    return verbose, "application/json"
