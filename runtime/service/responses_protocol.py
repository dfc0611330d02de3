"""OpenAI's Responses API on the wire, and its pure conversion to and from the engine.

`/v1/responses` requests decode into `ResponsesRequest`; `input_messages` normalises `input`
into message items, `to_params` gives the generation settings, `response_body` shapes a
Response object and `ResponseEvents` numbers the stream's events. Nothing here touches the
service, the manager, the store or an engine.

`input` (a string or a list of items) and an item's `content` (a string or a list of parts)
are unions because that is what OpenAI's clients send.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runtime.errors import InvalidRequest
from runtime.tools.grammar import json_schema_guidance

__all__ = [
    "InputItem",
    "ResponseEvents",
    "ResponsesRequest",
    "input_items",
    "new_response_id",
    "response_body",
    "to_params",
]


class InputText(msgspec.Struct, kw_only=True, tag="input_text", tag_field="type"):
    text: str


class OutputText(msgspec.Struct, kw_only=True, tag="output_text", tag_field="type"):
    """Assistant turns sent back as input carry their text as `output_text` parts."""

    text: str


class InputItem(msgspec.Struct, kw_only=True):
    """A message item; other item types (function calls, images, files) are a 400."""

    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText | OutputText]
    type: Literal["message"] = "message"


class TextFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = msgspec.field(default=None, name="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(msgspec.Struct, kw_only=True):
    format: TextFormat | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/responses`. `store` defaults to true, as OpenAI's does."""

    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _text(content: str | list[InputText | OutputText]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def input_items(request: ResponsesRequest) -> list[dict]:
    """This request's input as stored message items (what `input_items` lists), each with an id."""
    items = request.input
    if isinstance(items, str):
        items = [InputItem(role="user", content=items)]
    result = []
    for item in items:
        part = "output_text" if item.role == "assistant" else "input_text"
        result.append(
            {
                "id": new_message_id(),
                "type": "message",
                "role": item.role,
                "status": "completed",
                "content": [{"type": part, "text": _text(item.content)}],
            }
        )
    return result


def item_messages(items: list[dict]) -> list[dict]:
    """Stored items as chat messages (`developer` is OpenAI's newer name for `system`)."""
    return [
        {
            "role": "system" if item["role"] == "developer" else item["role"],
            "content": "".join(part["text"] for part in item["content"]),
        }
        for item in items
    ]


def to_params(request: ResponsesRequest) -> dict:
    """GenerationParams fields; `text.format` goes through the same guidance as chat's
    `response_format` (a JSON grammar without free whitespace).

    Raises:
        InvalidRequest: json_schema without a schema.
    """
    params: dict = {}
    if request.max_output_tokens is not None:
        params["max_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p"):
        if (value := getattr(request, name)) is not None:
            params[name] = value
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise InvalidRequest(
                "text.format json_schema needs a 'schema'", param="text.format.schema"
            )
        params["guidance"] = json_schema_guidance(fmt.schema_)
    elif fmt is not None and fmt.type == "json_object":
        params["guidance"] = json_schema_guidance({"type": "object"})
    return params


def _text_config(request: ResponsesRequest) -> dict:
    fmt = request.text.format if request.text is not None else None
    if fmt is None:
        return {"format": {"type": "text"}}
    return {"format": msgspec.to_builtins(fmt)}


def output_message(message_id: str, text: str, status: str) -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if status != "in_progress" else [],
    }


def response_body(
    request: ResponsesRequest,
    *,
    response_id: str,
    created_at: float,
    model: str,
    status: Literal["in_progress", "completed", "incomplete"],
    output: list[dict],
    usage: dict | None,
) -> dict:
    """A Response object as `client.responses.create/retrieve` parses it."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": request.store,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": _text_config(request),
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": request.metadata or {},
    }


def usage_body(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def final_status(finish_reason: str | None) -> Literal["completed", "incomplete"]:
    return "incomplete" if finish_reason == "length" else "completed"


class ResponseEvents:
    """Builds the Responses stream's events in order, each with the next `sequence_number`.

    created → in_progress → output_item.added → content_part.added → output_text.delta… →
    output_text.done → content_part.done → output_item.done → completed.
    """

    def __init__(self, request: ResponsesRequest, *, response_id: str, model: str):
        self.request = request
        self.response_id = response_id
        self.model = model
        self.message_id = new_message_id()
        self.created_at = time.time()
        self.sequence = 0

    def _event(self, kind: str, **fields: Any) -> tuple[str, dict]:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, data

    def body(self, status: Any, output: list[dict], usage: dict | None) -> dict:
        return response_body(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=output,
            usage=usage,
        )

    def opening(self) -> list[tuple[str, dict]]:
        response = self.body("in_progress", [], None)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        place = {"item_id": self.message_id, "output_index": 0}
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
            self._event(
                "response.output_item.added",
                output_index=0,
                item=output_message(self.message_id, "", "in_progress"),
            ),
            self._event("response.content_part.added", **place, content_index=0, part=part),
        ]

    def delta(self, text: str) -> tuple[str, dict]:
        return self._event(
            "response.output_text.delta",
            item_id=self.message_id,
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def closing(self, text: str, finish_reason: str | None, usage: dict) -> list[tuple[str, dict]]:
        """The closing events; the last carries the whole Response (also what gets stored)."""
        status = final_status(finish_reason)
        item = output_message(self.message_id, text, status)
        place = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        # Always `response.completed` (the status inside says "incomplete"): the openai
        # package's stream helper raises without that event.
        final = "response.completed"
        return [
            self._event("response.output_text.done", **place, text=text, logprobs=[]),
            self._event("response.content_part.done", **place, part=item["content"][0]),
            self._event("response.output_item.done", output_index=0, item=item),
            self._event(final, response=self.body(status, [item], usage)),
        ]

    def error(self, code: str, message: str) -> tuple[str, dict]:
        return self._event("error", code=code, message=message, param=None)
