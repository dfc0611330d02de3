"""OpenAI's Responses API: create (stream or not), retrieve, delete, list input items.

Thin controllers over the shared seam (`turn.py`): the stored conversation of
`previous_response_id` goes before the new input, and the result is stored (`store.py`)
unless `store` is false. After the first byte a failure is an `error` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, delete, get, post

from runtime.errors import InvalidRequest
from runtime.manager import ModelManager
from runtime.service.apis.responses import output as outgoing
from runtime.service.apis.responses import wire
from runtime.service.apis.responses.store import ResponsesStore, StoredResponse
from runtime.service.openapi import answers, streamed
from runtime.service.transport import SSE, framed, named_sse, sse_stream, whole
from runtime.service.turn import OpenTurn, new_id, open_turn

__all__ = ["ROUTES"]


def _store() -> ResponsesStore:
    """Read at call time, so the service's FOUNDRY_HOME decides where responses live."""
    return ResponsesStore()


async def _save(
    body: wire.ResponsesRequest, response: dict, items: list[dict], conversation: list[dict]
) -> None:
    if not body.store:
        return
    record = StoredResponse(
        id=response["id"],
        created_at=time.time(),
        response=response,
        input_items=items,
        conversation=[*conversation, *outgoing.assistant_turn(response["output"])],
    )
    await asyncio.to_thread(_store().put, record)


@post("/v1/responses", status_code=200, **streamed(outgoing.ResponseObject, SSE, "the Response"))
async def create_response(data: wire.ResponsesRequest, manager: ModelManager) -> Any:
    history: list[dict] = []
    if data.previous_response_id is not None:
        previous = await asyncio.to_thread(_store().get, data.previous_response_id)
        history = previous.conversation
    items = wire.input_items(data)
    conversation = history + wire.item_messages(items)
    wire.check_call_outputs(conversation)
    turn = await open_turn(manager, wire.to_turn(data, conversation))
    events = outgoing.ResponseEvents(data, response_id=new_id("resp_"), model=data.model)
    if data.stream:
        stream = _events(turn, data, events, items, conversation)
        frames = framed(stream, named_sse, lambda e: named_sse(events.error(e)), close=turn.aclose)
        return sse_stream(frames)
    (reply,) = await turn.collect()
    finished = reply.finished
    status = outgoing.final_status(finished.reason)
    output = outgoing.output_items(reply.parsed, status, events.message_id)
    response = events.body(status, output, outgoing.usage_body(turn.prompt_tokens, finished.usage))
    await _save(data, response, items, conversation)
    return whole(response)  # the handler streams SSE otherwise


async def _events(
    turn: OpenTurn,
    body: wire.ResponsesRequest,
    events: outgoing.ResponseEvents,
    items: list[dict],
    conversation: list[dict],
) -> AsyncIterator[tuple[str, dict]]:
    for event in events.begin(open_message=not turn.prepared.reader.reading):
        yield event
    pieces = turn.pieces()
    async for piece in pieces:
        for event in events.feed(piece):
            yield event
    usage = outgoing.usage_body(turn.prompt_tokens, pieces.finished.usage)
    closing = events.closing(pieces.finished.reason, usage)
    await _save(body, closing[-1][1]["response"], items, conversation)  # before the client sees it
    for event in closing:
        yield event


@get(
    "/v1/responses/{response_id:str}",
    sync_to_thread=True,
    **answers(outgoing.ResponseObject, "the stored Response"),
)
def retrieve_response(response_id: str) -> dict:
    return _store().get(response_id).response


@delete("/v1/responses/{response_id:str}", status_code=200, sync_to_thread=True)
def delete_response(response_id: str) -> outgoing.Deleted:
    _store().delete(response_id)
    return outgoing.Deleted(id=response_id)


@get("/v1/responses/{response_id:str}/input_items", sync_to_thread=True)
def list_input_items(request: Request, response_id: str) -> outgoing.InputItems:
    """OpenAI's cursor page: `order` (default desc), `limit` (1..100, default 20), `after`."""
    items = list(_store().get(response_id).input_items)
    order = request.query_params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"order must be 'asc' or 'desc', got {order[:20]!r}", param="order")
    if order == "desc":
        items.reverse()
    after = request.query_params.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = _limit(request.query_params.get("limit"))
    page = items[:limit]
    return outgoing.InputItems(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > limit,
    )


def _limit(value: str | None) -> int:
    if not value:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise InvalidRequest(f"limit must be between 1 and 100, got {value[:20]!r}", param="limit")
    return int(value)


ROUTES = [create_response, retrieve_response, delete_response, list_input_items]
