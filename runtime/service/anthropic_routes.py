"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A thin translation layer over the shared generation path (`generation.py`): decode an
`anthropic_protocol` Struct, run the chat, shape the reply or the SSE events. Every error
raised under `/v1/messages` renders in Anthropic's shape (`{"type": "error", "error":
{...}}`) through this Router's exception handler; after the first byte a failure becomes
an `event: error`. Auth (`x-api-key` or `Authorization: Bearer`) is the security
middleware's job, not this module's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Router, post
from litestar.exceptions import HTTPException
from litestar.response import Response, Stream

from runtime.errors import FoundryError, InvalidRequest
from runtime.service.anthropic_protocol import (
    CountTokensRequest,
    MessagesRequest,
    anthropic_error_body,
    content_block_delta_event,
    content_block_start_event,
    content_block_stop_event,
    matched_stop,
    message_body,
    message_delta_event,
    message_start_event,
    message_stop_event,
    new_message_id,
    stop_reason,
    to_chat,
)
from runtime.service.generation import ChatRun, chat_engine, collect, start_chat

__all__ = ["ROUTES"]

log = logging.getLogger(__name__)


def decode_body(raw: bytes, kind: type) -> Any:
    """A wire Struct from a body; a bad body is a 400 naming the field (never a 500)."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None


def error_status(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """(status, message, headers) for any exception; unknown ones are a logged 500."""
    if isinstance(exc, FoundryError):
        headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else {}
        return exc.http_status, exc.message, headers
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), dict(exc.headers or {})
    log.exception("unexpected error", exc_info=exc)
    return 500, "internal error; see the service log", {}


def anthropic_error(_: Request, exc: Exception) -> Response[Any]:
    status, message, headers = error_status(exc)
    return Response(anthropic_error_body(status, message), status_code=status, headers=headers)


def _sse(event: tuple[str, dict]) -> bytes:
    name, data = event
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


@post("/", status_code=200)
async def create_message(request: Request) -> Any:
    body = decode_body(await request.body(), MessagesRequest)
    messages, params = to_chat(body)
    engine = await chat_engine(request.app.state.manager, body.model)
    run = start_chat(engine, messages, params)
    message_id = new_message_id()
    if body.stream:
        events = _events(run, body, message_id)
        return Stream(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    reply = await collect(run)
    stop = matched_stop(engine.decode(reply.token_ids), reply.finish_reason, body.stop_sequences)
    return message_body(
        message_id=message_id,
        model=body.model,
        text=reply.text,
        reason=stop_reason(reply.finish_reason, stop),
        stop_sequence=stop,
        input_tokens=reply.prompt_tokens,
        output_tokens=reply.completion_tokens,
    )


async def _events(run: ChatRun, body: MessagesRequest, message_id: str) -> AsyncIterator[bytes]:
    """message_start, content_block_start, deltas, content_block_stop, message_delta, message_stop."""
    input_tokens = len(run.prompt_tokens)
    yield _sse(message_start_event(message_id=message_id, model=body.model, input_tokens=input_tokens))
    yield _sse(content_block_start_event())
    yield _sse(("ping", {"type": "ping"}))
    ids: list[int] = []
    finish, output_tokens = None, 0
    try:
        async for chunk in run:
            ids.extend(chunk.token_ids)
            finish, output_tokens = chunk.finish_reason, chunk.completion_tokens
            if chunk.text:
                yield _sse(content_block_delta_event(chunk.text))
    except Exception as exc:  # after the first byte, an error is an event (Anthropic's shape)
        status, message, _ = error_status(exc)
        yield _sse(("error", anthropic_error_body(status, message)))
        return
    finally:
        await run.aclose()
    stop = matched_stop(run.engine.decode(ids), finish, body.stop_sequences)
    yield _sse(content_block_stop_event())
    yield _sse(
        message_delta_event(
            reason=stop_reason(finish, stop),
            stop_sequence=stop,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    )
    yield _sse(message_stop_event())


@post("/count_tokens", status_code=200)
async def count_tokens(request: Request) -> dict[str, int]:
    body = decode_body(await request.body(), CountTokensRequest)
    messages, _ = to_chat(body)
    engine = await chat_engine(request.app.state.manager, body.model)
    return {"input_tokens": len(engine.encode(engine.render_prompt(messages)))}


ROUTES = [
    Router(
        path="/v1/messages",
        route_handlers=[create_message, count_tokens],
        exception_handlers={Exception: anthropic_error},
    )
]
