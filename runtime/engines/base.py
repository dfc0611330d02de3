"""What every generation path shares: the parameters in, the chunks out, the finished record.

These Structs are the seam between the API layers (OpenAI chat/completions, and later
Responses, Anthropic and Ollama) and the engines: each API converts its wire request
into `GenerationParams` with a pure function and turns `Chunk`s back into its own wire
shape. Nothing here imports onnxruntime-genai.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

__all__ = [
    "FINISH_REASONS",
    "Chunk",
    "GenerationParams",
    "GenerationRecord",
    "Guidance",
    "JsonObject",
    "JsonValue",
]

# What a chat template reads: messages and tools are JSON objects (Hugging Face's convention).
JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]

# ("json_schema" | "lark_grammar" | "regex", grammar text), handed to onnxruntime-genai as is.
Guidance = tuple[str, str]

FinishReason = Literal["stop", "length", "cancelled", "error"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "cancelled", "error")


class GenerationParams(msgspec.Struct, kw_only=True):
    """How to generate one sequence. Bounds are checked by the wire layer (runtime/service/bounds.py and each API's wire.py).

    `max_tokens` is clamped by the engine to what the context leaves after the prompt.
    `temperature == 0` means greedy. `top_k == 0` means off. `stop` strings end the
    sequence and never appear in the output. `min_tokens` masks EOS and suppresses stop
    strings until that many tokens exist (vLLM's semantics); `ignore_eos` masks EOS up to
    `max_tokens` (benchmarks need fixed lengths).
    """

    max_tokens: int = 256
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    ignore_eos: bool = False
    guidance: Guidance | None = None


class Chunk(msgspec.Struct, kw_only=True):
    """One step of a streamed generation: new text (stop text already removed) and counts.

    The last chunk of a sequence has `finish_reason` set; counts are running totals, so the
    last chunk's counts are the usage. Failures are raised (FoundryError leaves), not chunks.
    """

    text: str = ""
    token_ids: list[int] = msgspec.field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class GenerationRecord(msgspec.Struct, kw_only=True, frozen=True):
    """What one finished sequence cost; the manager hands it to listeners (e.g. /metrics)."""

    model_id: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str
    first_token_s: float | None  # submit -> first token (None if no token came)
    total_s: float  # submit -> finished
