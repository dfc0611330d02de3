"""The bounds and refusals every API's wire types share: one answer to "how many tokens may
one request ask for" whichever client asks (the hostile-input tests send each the same extremes).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from runtime.errors import UnsupportedParameter

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_INPUTS",
    "MAX_SEQUENCES",
    "MAX_TOKENS_BOUND",
    "MaxTokens",
    "Seed",
    "StopList",
    "Temperature",
    "VocabTopK",
    "refuse_serial_tool_calls",
]

MAX_TOKENS_BOUND = 1_000_000  # the engine further caps it by what the context leaves
# When a request names no max_tokens: the KV cache is sized by prompt + max_tokens, so
# "the whole 32k context" per request would cost ~0.8 GB on a 0.5B model.
DEFAULT_MAX_TOKENS = 2048
MAX_SEQUENCES = 8  # choices per request (n, or prompts x n): the engine's slot count
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
TopK = Annotated[int, Meta(ge=-1, le=1_000_000)]  # vLLM: -1 (or 0) = off
MaxTokens = Annotated[int, Meta(ge=1, le=MAX_TOKENS_BOUND)]
MinTokens = Annotated[int, Meta(ge=0, le=MAX_TOKENS_BOUND)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]  # msgspec bounds must fit int64
N = Annotated[int, Meta(ge=1, le=MAX_SEQUENCES)]
StopText = Annotated[str, Meta(min_length=1, max_length=256)]
StopList = Annotated[list[StopText], Meta(max_length=4)]  # stop checks cost stops x len per token
Stop = StopText | StopList
VocabTopK = Annotated[int, Meta(ge=0, le=1_000_000)]  # APIs where 0 (not -1) means off
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
MAX_INPUTS = 2048  # OpenAI's limit on inputs per embeddings request (Ollama's embed too)


def refuse_serial_tool_calls(parallel_tool_calls: bool | None, tools: Any) -> None:
    """`parallel_tool_calls: false` with tools: refused, since a reply may hold several calls.

    Raises:
        UnsupportedParameter: naming the field.
    """
    if parallel_tool_calls is False and tools:
        raise UnsupportedParameter(
            "parallel_tool_calls=false is not supported: a reply may contain several tool calls",
            param="parallel_tool_calls",
        )
