"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

Thin controllers over the shared seam (`turn.py`). Errors under `/v1/messages` take
Anthropic's shape in the app's one handler (`errors.shape_for`), and after the first byte
are an `event: error`; auth (`x-api-key` too) is the security middleware's job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import post

from runtime.manager import ModelManager
from runtime.service.apis.anthropic import wire
from runtime.service.errors import Described, anthropic_body
from runtime.service.openapi import streamed
from runtime.service.transport import SSE, WireBody, framed, named_sse, sse_stream, whole
from runtime.service.turn import OpenTurn, new_id, open_turn, prepare_turn

__all__ = ["ROUTES"]


@post("/v1/messages", status_code=200, **streamed(wire.MessageBody, SSE, "the reply"))
async def create_message(data: wire.MessagesRequest, manager: ModelManager) -> Any:
    turn = await open_turn(manager, wire.to_turn(data))
    message_id = new_id("msg_", 24)
    if data.stream:
        events = _events(turn, data.model, message_id)
        return sse_stream(framed(events, named_sse, _error_event, close=turn.aclose))
    (reply,) = await turn.collect()
    end = reply.finished
    usage = wire.Usage(input_tokens=turn.prompt_tokens, output_tokens=end.usage.completion_tokens)
    message = wire.MessageBody(
        id=message_id,
        model=data.model,
        content=wire.content_blocks(reply.parsed),
        stop_reason=wire.stop_reason(end.reason, end.matched_stop, end.tool_calls),
        stop_sequence=end.matched_stop,
        usage=usage,
    )
    return whole(message)  # the handler streams SSE otherwise


def _error_event(error: Described) -> bytes:
    return named_sse(("error", anthropic_body(error)))


async def _events(turn: OpenTurn, model: str, message_id: str) -> AsyncIterator[tuple[str, dict]]:
    """message_start, content_block_start, ping, deltas, content_block_stop, message_delta,
    message_stop: Anthropic's order (blocks start as their first piece arrives when the
    reply is read for thinking and tool_use)."""
    input_tokens = turn.prompt_tokens
    blocks = wire.BlockStream()
    usage = wire.Usage(input_tokens=input_tokens, output_tokens=0)
    yield wire.event(
        "message_start", message=wire.MessageBody(id=message_id, model=model, usage=usage)
    )
    for event in blocks.begin(open_text=not turn.prepared.reader.reading):
        yield event
    yield wire.event("ping")
    pieces = turn.pieces()
    async for piece in pieces:
        for event in blocks.feed(piece):
            yield event
    for event in blocks.end():
        yield event
    end = pieces.finished
    reason = wire.stop_reason(end.reason, end.matched_stop, end.tool_calls)
    usage = wire.Usage(input_tokens=input_tokens, output_tokens=end.usage.completion_tokens)
    delta = {"stop_reason": reason, "stop_sequence": end.matched_stop}
    yield wire.event("message_delta", delta=delta, usage=usage)
    yield wire.event("message_stop")


@post("/v1/messages/count_tokens", status_code=200, dto=WireBody, return_dto=None)
async def count_tokens(data: wire.CountTokensRequest, manager: ModelManager) -> wire.CountTokens:
    prepared = await prepare_turn(manager, wire.to_turn(data))
    return wire.CountTokens(input_tokens=len(prepared.prompt_ids[0]))


ROUTES = [create_message, count_tokens]
