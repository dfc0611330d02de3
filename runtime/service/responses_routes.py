"""OpenAI's Responses API: create (stream or not), retrieve, delete, list input items.

A thin translation layer over the shared generation path (`generation.py`): decode a
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

from litestar import Request, delete, get, post
from litestar.response import Stream

from runtime.errors import InvalidRequest
from runtime.service.anthropic_routes import decode_body, error_status
from runtime.service.generation import ChatRun, chat_engine, collect, start_chat
from runtime.service.responses_protocol import (
    ResponseEvents,
    ResponsesRequest,
    final_status,
    input_items,
    item_messages,
    new_response_id,
    output_message,
    to_params,
    usage_body,
)
from runtime.service.responses_store import ResponsesStore, StoredResponse

__all__ = ["ROUTES"]


def _store() -> ResponsesStore:
    """Read at call time, so the service's FOUNDRY_HOME decides where responses live."""
    return ResponsesStore()


def _sse(event: tuple[str, dict]) -> bytes:
    name, data = event
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _save(body: ResponsesRequest, response: dict, items: list[dict],
                conversation: list[dict], text: str) -> None:
    if not body.store:
        return
    record = StoredResponse(
        id=response["id"],
        created_at=time.time(),
        response=response,
        input_items=items,
        conversation=[*conversation, {"role": "assistant", "content": text}],
    )
    await asyncio.to_thread(_store().put, record)


@post("/v1/responses", status_code=200)
async def create_response(request: Request) -> Any:
    body = decode_body(await request.body(), ResponsesRequest)
    history: list[dict] = []
    if body.previous_response_id is not None:
        previous = await asyncio.to_thread(_store().get, body.previous_response_id)
        history = previous.conversation
    items = input_items(body)
    conversation = history + item_messages(items)
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    messages += conversation
    engine = await chat_engine(request.app.state.manager, body.model)
    params = _params(body, engine)
    run = start_chat(engine, messages, params)
    events = ResponseEvents(body, response_id=new_response_id(), model=body.model)
    if body.stream:
        stream = _events(run, body, events, items, conversation)
        return Stream(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    reply = await collect(run)
    status = final_status(reply.finish_reason)
    output = [output_message(events.message_id, reply.text, status)]
    usage = usage_body(reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens)
    response = events.body(status, output, usage)
    await _save(body, response, items, conversation, reply.text)
    return response


def _params(body: ResponsesRequest, engine: Any) -> dict:
    params = to_params(body)
    params.setdefault("max_tokens", engine.context_length)  # no cap: until the context is full
    return params


async def _events(run: ChatRun, body: ResponsesRequest, events: ResponseEvents,
                  items: list[dict], conversation: list[dict]) -> AsyncIterator[bytes]:
    for event in events.opening():
        yield _sse(event)
    parts: list[str] = []
    last = None
    try:
        async for chunk in run:
            last = chunk
            if chunk.text:
                parts.append(chunk.text)
                yield _sse(events.delta(chunk.text))
    except Exception as exc:  # after the first byte, an error is an event
        status, message, _ = error_status(exc)
        yield _sse(events.error(str(status), message))
        return
    finally:
        await run.aclose()
    text = "".join(parts)
    prompt = last.prompt_tokens if last else len(run.prompt_tokens)
    usage = usage_body(prompt, last.completion_tokens if last else 0, last.cached_tokens if last else 0)
    closing = events.closing(text, last.finish_reason if last else None, usage)
    await _save(body, closing[-1][1]["response"], items, conversation, text)  # before the client sees it
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
