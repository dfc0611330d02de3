"""Anthropic Messages API on the wire, and its pure conversion to and from the engine.

`/v1/messages` requests decode into these Structs; `to_chat(request)` turns one into the
chat messages and generation settings every API shares, and the `*_event`/`message_body`
functions shape the engine's output as Anthropic's clients expect it. Nothing here touches
the service, the manager or an engine: it is unit-tested without a server.

The wire format has fields that are "a string or a list of blocks" (`system`, `content`);
they stay unions here because that is what Anthropic's clients send.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "CountTokensRequest",
    "MessagesRequest",
    "anthropic_error_body",
    "anthropic_error_type",
    "content_block_delta_event",
    "content_block_start_event",
    "content_block_stop_event",
    "matched_stop",
    "message_body",
    "message_delta_event",
    "message_start_event",
    "message_stop_event",
    "new_message_id",
    "stop_reason",
    "to_chat",
]


class TextBlock(msgspec.Struct, kw_only=True, tag="text", tag_field="type"):
    """The only content block this service reads; any other `type` is a 400."""

    text: str


class Message(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[TextBlock]


class MessagesRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/messages`: `max_tokens` is required, as Anthropic requires it."""

    model: str
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None


class CountTokensRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/messages/count_tokens`: the prompt part of a MessagesRequest."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None


def _text(content: str | list[TextBlock]) -> str:
    return content if isinstance(content, str) else "".join(block.text for block in content)


def to_chat(request: MessagesRequest | CountTokensRequest) -> tuple[list[dict], dict]:
    """The shared chat messages and GenerationParams fields for one Anthropic request.

    `system` becomes a leading system message (Anthropic keeps it outside `messages`).
    Anthropic's default temperature is 1.0, as is ours, so an absent value stays absent.
    """
    messages: list[dict] = []
    if request.system is not None and (system := _text(request.system)):
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": _text(m.content)} for m in request.messages)
    if not isinstance(request, MessagesRequest):
        return messages, {}
    params: dict = {"max_tokens": request.max_tokens, "stop": list(request.stop_sequences or [])}
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(request, name)) is not None:
            params[name] = value
    return messages, params


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def matched_stop(raw_text: str, finish_reason: str | None, stops: list[str] | None) -> str | None:
    """Which stop sequence ended a reply, from the raw decoded tokens (stop text included).

    The engine cuts at the earliest stop string and reports only "stop", which EOS also
    reports; the earliest stop in the raw text (the shortest on a tie, as it completes
    first) is the one that matched, and no stop in it means the model ended the turn.
    """
    if finish_reason != "stop" or not stops:
        return None
    found = [(raw_text.find(s), len(s), s) for s in stops if s and s in raw_text]
    return min(found)[2] if found else None


def stop_reason(finish_reason: str | None, stop_sequence: str | None) -> str:
    """Anthropic's `stop_reason` for an engine finish reason."""
    if finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if stop_sequence is not None else "end_turn"


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}


def message_body(
    *,
    message_id: str,
    model: str,
    text: str | None,
    reason: str | None,
    stop_sequence: str | None,
    input_tokens: int,
    output_tokens: int,
) -> dict:
    """The `message` object: a full response when `text` is set, the stream's opening when None."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(input_tokens, output_tokens),
    }


# --- stream events: (event name, data) pairs, in the order a stream sends them -------------
def message_start_event(*, message_id: str, model: str, input_tokens: int) -> tuple[str, dict]:
    message = message_body(
        message_id=message_id,
        model=model,
        text=None,
        reason=None,
        stop_sequence=None,
        input_tokens=input_tokens,
        output_tokens=0,
    )
    return "message_start", {"type": "message_start", "message": message}


def content_block_start_event() -> tuple[str, dict]:
    block = {"type": "text", "text": ""}
    return "content_block_start", {
        "type": "content_block_start",
        "index": 0,
        "content_block": block,
    }


def content_block_delta_event(text: str) -> tuple[str, dict]:
    delta = {"type": "text_delta", "text": text}
    return "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}


def content_block_stop_event() -> tuple[str, dict]:
    return "content_block_stop", {"type": "content_block_stop", "index": 0}


def message_delta_event(
    *, reason: str, stop_sequence: str | None, input_tokens: int, output_tokens: int
) -> tuple[str, dict]:
    return "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
        "usage": _usage(input_tokens, output_tokens),
    }


def message_stop_event() -> tuple[str, dict]:
    return "message_stop", {"type": "message_stop"}


# --- errors ---------------------------------------------------------------------------------
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error `type` for an HTTP status (`api_error` for anything else)."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error_body(status: int, message: str) -> dict:
    """`{"type": "error", "error": {"type", "message"}}`: what Anthropic's clients parse."""
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}
