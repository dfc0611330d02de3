"""OpenAI's Responses API: create (stream or not), retrieve, delete, list input items.

A thin translation layer over the shared generation path (`streaming.start_generation`): decode a
`ResponsesRequest`, put the stored conversation of `previous_response_id` before the new
input, run the chat, answer a Response object or the Responses event stream, and store the
result (`responses_store.py`) unless `store` is false. Errors keep OpenAI's shape (the app's
handlers); after the first byte a failure is an `error` event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, delete, get, post
from litestar.response import Stream

from runtime.engines.base import GenerationParams
from runtime.errors import InvalidRequest
from runtime.service.api_errors import error_status
from runtime.service.protocol import decode_body, open_ended_max_tokens
from runtime.service.responses_protocol import (
    OutputStream,
    ResponseEvents,
    ResponsesRequest,
    assistant_turn,
    chat_tools,
    check_call_outputs,
    final_status,
    input_items,
    item_messages,
    new_response_id,
    output_items,
    to_params,
    usage_body,
)
from runtime.service.responses_store import ResponsesStore, StoredResponse
from runtime.service.streaming import Generation, collect, start_generation
from runtime.service.tool_turns import PlannedTurn, plan_turn
from runtime.tools.parsers import Delta

__all__ = ["ROUTES"]

# Litestar gives a handler's media_type precedence over a Stream's own: the create handler
# declares SSE and returns its whole (non-streamed) answer as a JSON Response.
SSE = "text/event-stream"


def _store() -> ResponsesStore:
    """Read at call time, so the service's FOUNDRY_HOME decides where responses live."""
    return ResponsesStore()


def _sse(event: tuple[str, dict]) -> bytes:
    name, data = event
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _save(
    body: ResponsesRequest, response: dict, items: list[dict], conversation: list[dict]
) -> None:
    if not body.store:
        return
    record = StoredResponse(
        id=response["id"],
        created_at=time.time(),
        response=response,
        input_items=items,
        conversation=[*conversation, *assistant_turn(response["output"])],
    )
    await asyncio.to_thread(_store().put, record)


@post("/v1/responses", status_code=200, media_type=SSE)
async def create_response(request: Request) -> Any:
    body = decode_body(await request.body(), ResponsesRequest)
    history: list[dict] = []
    if body.previous_response_id is not None:
        previous = await asyncio.to_thread(_store().get, body.previous_response_id)
        history = previous.conversation
    items = input_items(body)
    conversation = history + item_messages(items)
    check_call_outputs(conversation)
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    messages += conversation
    manager = request.app.state.manager
    engine = await manager.get(body.model, task="chat")
    tools, tool_choice = chat_tools(body)
    params = msgspec.convert(_params(body, engine), GenerationParams)
    turn = plan_turn(engine, params, messages, tools=tools, tool_choice=tool_choice)
    generation = await start_generation(manager, body.model, turn.params, prompt=turn.prompt_ids)
    events = ResponseEvents(body, response_id=new_response_id(), model=body.model)
    if body.stream:
        stream = _events(generation, turn, body, events, items, conversation)
        return Stream(stream, media_type=SSE, headers={"Cache-Control": "no-cache"})
    reply = await collect(generation.streams[0])
    status = final_status(reply.finish_reason)
    output = output_items(turn.parse(reply.text), status, events.message_id)
    usage = usage_body(generation.prompt_tokens, reply.completion_tokens, reply.cached_tokens)
    response = events.body(status, output, usage)
    await _save(body, response, items, conversation)
    return Response(response, media_type=MediaType.JSON)  # the handler's default is SSE


def _params(body: ResponsesRequest, engine: Any) -> dict:
    params = to_params(body)
    # OpenAI's default is "until the context is full"; the engine clamps to what it leaves.
    params["max_tokens"] = open_ended_max_tokens(params.get("max_tokens"), engine.context_length)
    return params


async def _events(
    generation: Generation,
    turn: PlannedTurn,
    body: ResponsesRequest,
    events: ResponseEvents,
    items: list[dict],
    conversation: list[dict],
) -> AsyncIterator[bytes]:
    reader = turn.reader()  # None: plain text, the message item opens at once
    output = OutputStream(events)
    for event in output.begin(open_message=reader is None):
        yield _sse(event)
    last = None
    try:
        async for chunk in generation.streams[0]:
            last = chunk
            if reader is None:
                deltas = [Delta(content=chunk.text)] if chunk.text else []
            else:
                deltas = reader.feed(chunk.text) + (reader.finish() if chunk.finish_reason else [])
            for delta in deltas:
                for event in output.feed(delta):
                    yield _sse(event)
    except Exception as exc:  # after the first byte, an error is an event
        status, message, _ = error_status(exc)
        yield _sse(events.error(str(status), message))
        return
    finally:
        await generation.aclose()
    output_tokens, cached = (last.completion_tokens, last.cached_tokens) if last else (0, 0)
    usage = usage_body(generation.prompt_tokens, output_tokens, cached)
    closing = output.closing(last.finish_reason if last else None, usage)
    await _save(body, closing[-1][1]["response"], items, conversation)  # before the client sees it
    for event in closing:
        yield _sse(event)


@get("/v1/responses/{response_id:str}", sync_to_thread=True)
def retrieve_response(response_id: str) -> dict:
    return _store().get(response_id).response


@delete("/v1/responses/{response_id:str}", status_code=200, sync_to_thread=True)
def delete_response(response_id: str) -> dict:
    _store().delete(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@get("/v1/responses/{response_id:str}/input_items", sync_to_thread=True)
def list_input_items(request: Request, response_id: str) -> dict:
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
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


def _limit(value: str | None) -> int:
    if not value:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise InvalidRequest(f"limit must be between 1 and 100, got {value[:20]!r}", param="limit")
    return int(value)


ROUTES = [create_response, retrieve_response, delete_response, list_input_items]
