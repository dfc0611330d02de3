"""OpenAI's Responses API, the way back: Response objects, output items and the event stream.

Pure: unit-tested without a server.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from runtime.service.apis.responses import wire
from runtime.service.errors import Described
from runtime.service.replies import Usage
from runtime.service.turn import new_id

__all__ = [
    "Deleted",
    "InputItems",
    "ResponseEvents",
    "ResponseObject",
    "assistant_turn",
    "final_status",
    "output_items",
    "usage_body",
]


def reasoning_item(item_id: str, text: str | None, status: str) -> dict:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def output_items(parsed: Any, status: str, message_id: str | None = None) -> list[dict]:
    """A parsed reply (runtime/tools ParsedOutput) as Response output items: reasoning, the
    message (when there is text, or nothing else), then one function_call per tool call."""
    items = []
    if parsed.reasoning is not None:
        items.append(reasoning_item(new_id("rs_"), parsed.reasoning, "completed"))
    if parsed.content or not parsed.tool_calls:
        items.append(output_message(message_id or new_id("msg_"), parsed.content or "", status))
    for call in parsed.tool_calls:
        items.append(
            wire.function_call_item(new_id("fc_"), call.id, call.name, call.arguments, "completed")
        )
    return items


def assistant_turn(items: list[dict]) -> list[dict]:
    """The reply's output items as stored conversation messages (what the next turn sees):
    its messages (output_message's, already the assistant's) and function calls."""
    return wire.item_messages([i for i in items if i["type"] in ("message", "function_call")])


def output_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_message(message_id: str, text: str, status: str) -> dict:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_part(text)] if status != "in_progress" else [],
    }


class ResponseObject(msgspec.Struct, kw_only=True):
    """A Response object as `client.responses.create/retrieve` parses it."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete"]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[dict[str, Any]]  # output_items(): reasoning, message, function_call
    parallel_tool_calls: bool = True
    previous_response_id: str | None
    reasoning: dict[str, str | None] = msgspec.field(
        default_factory=lambda: {"effort": None, "summary": None}
    )
    store: bool
    temperature: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_p: float
    truncation: str = "disabled"
    usage: dict[str, Any] | None  # usage_body()
    user: str | None = None
    metadata: dict[str, str]


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItems(msgspec.Struct, kw_only=True):
    """OpenAI's cursor page of a stored response's input items."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


def usage_body(input_tokens: int, usage: Usage) -> dict:
    """A reply's usage (its prompt counted once: `input_tokens`) as the Response's."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + usage.completion_tokens,
    }


def final_status(finish_reason: str | None) -> Literal["completed", "incomplete"]:
    return "incomplete" if finish_reason == "length" else "completed"


class ResponseEvents:
    """One Response: its object (`body`), and its stream's events in order, each with the next
    `sequence_number`: created → in_progress → output_item.added → content_part.added →
    output_text.delta… → output_text.done → content_part.done → output_item.done → completed.
    An item (reasoning, message, each function call) opens as its first piece arrives and closes
    when another starts or the reply ends; `begin(open_message=True)` opens the message at once.
    """

    def __init__(self, request: wire.ResponsesRequest, *, response_id: str, model: str):
        self.request = request
        self.response_id = response_id
        self.model = model
        self.message_id = new_id("msg_")
        self.created_at = time.time()
        self.sequence = 0
        self.items: list[dict] = []  # closed items, in output order
        self._open: dict | None = None
        self._text: list[str] = []

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict]:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, data

    def body(self, status: Any, output: list[dict], usage: dict | None) -> dict:
        """The Response object as the JSON the route sends, stores and streams."""
        request = self.request
        fmt = request.text.format if request.text is not None else None
        response = ResponseObject(
            id=self.response_id,
            created_at=int(self.created_at),
            status=status,
            incomplete_details={"reason": "max_output_tokens"} if status == "incomplete" else None,
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            model=self.model,
            output=output,
            previous_response_id=request.previous_response_id,
            store=request.store,
            temperature=1.0 if request.temperature is None else request.temperature,
            text={"format": {"type": "text"} if fmt is None else msgspec.to_builtins(fmt)},
            tool_choice=request.tool_choice or "auto",
            tools=request.tools or [],
            top_p=1.0 if request.top_p is None else request.top_p,
            usage=usage,
            metadata=request.metadata or {},
        )
        return msgspec.to_builtins(response)

    def error(self, error: Described) -> tuple[str, dict]:
        """A failure after the first byte: an `error` event, its code the HTTP status."""
        return self._event("error", code=str(error.status), message=error.message, param=None)

    def begin(self, *, open_message: bool) -> list[tuple[str, dict]]:
        response = self.body("in_progress", [], None)
        sent = [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]
        return sent + (self._start("message") if open_message else [])

    def _item_event(self, kind: str, item: dict) -> tuple[str, dict]:
        return self._event(f"response.output_item.{kind}", output_index=len(self.items), item=item)

    def _emit(self, kind: str, **fields: Any) -> tuple[str, dict]:
        assert self._open is not None, "an item is open while its events are sent"
        place = {"item_id": self._open["id"], "output_index": len(self.items)}
        return self._event(f"response.{kind}", **place, **fields)

    def _start(self, kind: str, call: Any = None) -> list[tuple[str, dict]]:
        sent = self._close("completed")
        if kind == "message":
            item = output_message(self.message_id, "", "in_progress")
        elif kind == "reasoning":
            item = reasoning_item(new_id("rs_"), None, "in_progress")
        else:
            item = wire.function_call_item(new_id("fc_"), call.id, call.name, "", "in_progress")
        self._open, self._text = item, []
        sent.append(self._item_event("added", item))
        if kind == "message":
            sent.append(self._emit("content_part.added", content_index=0, part=output_part("")))
        return sent

    def feed(self, delta: Any) -> list[tuple[str, dict]]:
        """One Delta: content, reasoning, or a tool call's id/name and argument fragment."""
        if delta.index is not None:
            sent = self._start("function_call", delta) if delta.id is not None else []
            if delta.arguments:
                self._text.append(delta.arguments)
                sent.append(self._emit("function_call_arguments.delta", delta=delta.arguments))
            return sent
        kind = "reasoning" if delta.reasoning is not None else "message"
        piece = delta.reasoning if delta.reasoning is not None else delta.content
        sent = [] if self._open is not None and self._open["type"] == kind else self._start(kind)
        if piece:
            self._text.append(piece)
            if kind == "reasoning":
                sent.append(self._emit("reasoning_text.delta", content_index=0, delta=piece))
            else:
                sent.append(
                    self._emit("output_text.delta", content_index=0, delta=piece, logprobs=[])
                )
        return sent

    def _close(self, status: str) -> list[tuple[str, dict]]:
        item, text = self._open, "".join(self._text)
        if item is None:
            return []
        if item["type"] == "message":
            item = output_message(item["id"], text, status)
            sent = [
                self._emit("output_text.done", content_index=0, text=text, logprobs=[]),
                self._emit("content_part.done", content_index=0, part=item["content"][0]),
            ]
        elif item["type"] == "reasoning":
            item = reasoning_item(item["id"], text, "completed")
            sent = [self._emit("reasoning_text.done", content_index=0, text=text)]
        else:
            item = {**item, "arguments": text, "status": "completed"}
            sent = [self._emit("function_call_arguments.done", name=item["name"], arguments=text)]
        sent.append(self._item_event("done", item))
        self.items.append(item)
        self._open, self._text = None, []
        return sent

    def closing(self, finish_reason: str | None, usage: dict) -> list[tuple[str, dict]]:
        """Close the open item (an empty message if nothing came), then `response.completed`
        carrying the whole Response (also what gets stored)."""
        status = final_status(finish_reason)
        sent = [] if self.items or self._open else self._start("message")
        sent += self._close(status)
        final = self.body(status, self.items, usage)
        return [*sent, self._event("response.completed", response=final)]
