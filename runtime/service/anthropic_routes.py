"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A thin translation layer over the shared generation path (`streaming.start_generation`):
decode an `anthropic_protocol` Struct, generate, shape the reply or the SSE events. Every
error raised under `/v1/messages` renders in Anthropic's shape (`{"type": "error", "error":
{...}}`) through this Router's exception handlers; after the first byte a failure becomes
an `event: error`. Auth (`x-api-key` or `Authorization: Bearer`) is the security
middleware's job, not this module's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import MediaType, Request, Router, post
from litestar.exceptions import HTTPException
from litestar.response import Response, Stream

from runtime.engines.base import GenerationParams
from runtime.errors import FoundryError
from runtime.service.anthropic_protocol import (
    BlockStream,
    CountTokensRequest,
    MessagesRequest,
    anthropic_error_body,
    chat_tools,
    content_blocks,
    matched_stop,
    message_body,
    message_delta_event,
    message_start_event,
    message_stop_event,
    new_message_id,
    stop_reason,
    to_chat,
)
from runtime.service.api_errors import error_status
from runtime.service.protocol import decode_body
from runtime.service.streaming import Generation, collect, start_generation
from runtime.service.tool_turns import PlannedTurn, plan_turn
from runtime.tools.parsers import Delta

__all__ = ["ROUTES"]

# Litestar gives a handler's media_type precedence over a Stream's own: streaming handlers
# declare SSE and return their whole (non-streamed) answers as JSON Responses.
SSE = "text/event-stream"


def anthropic_error(_: Request, exc: Exception) -> Response[Any]:
    status, message, headers = error_status(exc)
    return Response(anthropic_error_body(status, message), status_code=status, headers=headers)


def _sse(event: tuple[str, dict]) -> bytes:
    name, data = event
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


@post("/", status_code=200, media_type=SSE)
async def create_message(request: Request) -> Any:
    body = decode_body(await request.body(), MessagesRequest)
    messages, params = to_chat(body)
    tools, tool_choice = chat_tools(body)
    manager = request.app.state.manager
    engine = await manager.get(body.model, task="chat")
    turn = plan_turn(
        engine,
        msgspec.convert(params, GenerationParams),
        messages,
        tools=tools,
        tool_choice=tool_choice,
    )
    generation = await start_generation(manager, body.model, turn.params, prompt=turn.prompt_ids)
    message_id = new_message_id()
    if body.stream:
        events = _events(generation, engine, turn, body, message_id)
        return Stream(events, media_type=SSE, headers={"Cache-Control": "no-cache"})
    reply = await collect(generation.streams[0])
    stop = matched_stop(engine.decode(reply.token_ids), reply.finish_reason, body.stop_sequences)
    parsed = turn.parse(reply.text)
    message = message_body(
        message_id=message_id,
        model=body.model,
        text=None,
        blocks=content_blocks(parsed),
        reason=stop_reason(reply.finish_reason, stop, bool(parsed.tool_calls)),
        stop_sequence=stop,
        input_tokens=generation.prompt_tokens,
        output_tokens=reply.completion_tokens,
    )
    return Response(message, media_type=MediaType.JSON)  # the handler's default is SSE


async def _events(
    generation: Generation,
    engine: Any,
    turn: PlannedTurn,
    body: MessagesRequest,
    message_id: str,
) -> AsyncIterator[bytes]:
    """message_start, content_block_start, ping, deltas, content_block_stop, message_delta,
    message_stop: Anthropic's order (blocks start as their first piece arrives when the
    reply is read for thinking and tool_use)."""
    input_tokens = generation.prompt_tokens
    reader = turn.reader()  # None: plain text, one text block opened at once
    blocks = BlockStream()
    yield _sse(
        message_start_event(message_id=message_id, model=body.model, input_tokens=input_tokens)
    )
    for event in blocks.begin(open_text=reader is None):
        yield _sse(event)
    yield _sse(("ping", {"type": "ping"}))
    ids: list[int] = []
    finish, output_tokens = None, 0
    try:
        async for chunk in generation.streams[0]:
            ids.extend(chunk.token_ids)
            finish, output_tokens = chunk.finish_reason, chunk.completion_tokens
            if reader is None:
                deltas = [Delta(content=chunk.text)] if chunk.text else []
            else:
                deltas = reader.feed(chunk.text) + (reader.finish() if chunk.finish_reason else [])
            for delta in deltas:
                for event in blocks.feed(delta):
                    yield _sse(event)
    except Exception as exc:  # after the first byte, an error is an event (Anthropic's shape)
        status, message, _ = error_status(exc)
        yield _sse(("error", anthropic_error_body(status, message)))
        return
    finally:
        await generation.aclose()
    stop = matched_stop(engine.decode(ids), finish, body.stop_sequences)
    for event in blocks.end():
        yield _sse(event)
    yield _sse(
        message_delta_event(
            reason=stop_reason(finish, stop, blocks.tool_use),
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
    tools, _ = chat_tools(body)
    engine = await request.app.state.manager.get(body.model, task="chat")
    return {"input_tokens": len(plan_turn(engine, _NO_PARAMS, messages, tools=tools).prompt_ids)}


_NO_PARAMS = GenerationParams(max_tokens=1)


ROUTES = [
    Router(
        path="/v1/messages",
        route_handlers=[create_message, count_tokens],
        # Every key the app maps (runtime/service/error_responses.py), so none of them wins here.
        exception_handlers={e: anthropic_error for e in (FoundryError, HTTPException, Exception)},
    )
]
