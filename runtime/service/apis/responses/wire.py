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

from runtime.engines.base import GenerationParams
from runtime.errors import InvalidRequest
from runtime.service.bounds import MaxTokens, refuse_serial_tool_calls
from runtime.service.turn import Turn
from runtime.tools.grammar import json_schema_guidance

__all__ = [
    "InputItem",
    "ResponseEvents",
    "ResponsesRequest",
    "input_items",
    "new_response_id",
    "response_body",
    "to_params",
    "to_turn",
]


class InputText(msgspec.Struct, kw_only=True, tag="input_text", tag_field="type"):
    text: str


class OutputText(msgspec.Struct, kw_only=True, tag="output_text", tag_field="type"):
    """Assistant turns sent back as input carry their text as `output_text` parts."""

    text: str


class ReasoningText(msgspec.Struct, kw_only=True, tag="reasoning_text", tag_field="type"):
    """Reasoning items sent back as input carry these; they are not shown to the model."""

    text: str


_ITEM_FIELDS = {
    "message": ("role", "content"),
    "function_call": ("call_id", "name", "arguments"),
    "function_call_output": ("call_id", "output"),
}


class InputItem(msgspec.Struct, kw_only=True):
    """A message, function_call, function_call_output or (ignored) reasoning item.

    One Struct with each type's fields optional, because message items often come without
    `type`; `__post_init__` holds each type to its fields (a ValueError decodes as a 400).
    Other item types (images, files, built-in tools) are a 400.
    """

    type: Literal["message", "function_call", "function_call_output", "reasoning"] = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputText | OutputText | ReasoningText] | None = None
    call_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    arguments: str | None = None
    output: str | list[InputText | OutputText] | None = None
    id: str | None = None
    status: str | None = None
    summary: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None

    def __post_init__(self) -> None:
        missing = [f for f in _ITEM_FIELDS.get(self.type, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.type} item needs {', '.join(missing)}")


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
    max_output_tokens: MaxTokens | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _text(content: Any) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _stored_item(item: InputItem) -> dict | None:
    if item.type == "function_call":
        return {
            "id": item.id or f"fc_{uuid.uuid4().hex}",
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
            "status": "completed",
        }
    if item.type == "function_call_output":
        return {
            "id": item.id or f"fco_{uuid.uuid4().hex}",
            "type": "function_call_output",
            "call_id": item.call_id,
            "output": _text(item.output),
            "status": "completed",
        }
    if item.type == "reasoning":
        return None  # the model does not see its past reasoning (chat templates drop it too)
    part = "output_text" if item.role == "assistant" else "input_text"
    return {
        "id": new_message_id(),
        "type": "message",
        "role": item.role,
        "status": "completed",
        "content": [{"type": part, "text": _text(item.content)}],
    }


def input_items(request: ResponsesRequest) -> list[dict]:
    """This request's input as stored items (what `input_items` lists), each with an id."""
    items = request.input
    if isinstance(items, str):
        items = [InputItem(role="user", content=items)]
    return [stored for item in items if (stored := _stored_item(item)) is not None]


def item_messages(items: list[dict]) -> list[dict]:
    """Stored items as chat messages (`developer` is OpenAI's newer name for `system`).

    function_call items join the assistant message before them as `tool_calls` (or start
    one); function_call_output items are `tool` messages.
    """
    messages: list[dict] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                messages[-1] = {**last, "tool_calls": [*last.get("tool_calls", []), call]}
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
        else:
            messages.append(
                {
                    "role": "system" if item["role"] == "developer" else item["role"],
                    "content": "".join(part["text"] for part in item["content"]),
                }
            )
    return messages


def check_call_outputs(messages: list[dict]) -> None:
    """Every function_call_output answers a call made earlier in the conversation (OpenAI).

    Raises:
        InvalidRequest: an output whose call_id no earlier function_call has.
    """
    calls: set[str] = set()
    for message in messages:
        calls.update(call["id"] for call in message.get("tool_calls") or ())
        if message["role"] == "tool" and message.get("tool_call_id") not in calls:
            raise InvalidRequest(
                f"no function call found for the function_call_output with call_id "
                f"{message.get('tool_call_id')!r}",
                param="input",
            )


def chat_tools(request: ResponsesRequest) -> tuple[list[dict] | None, Any]:
    """The request's function tools and tool_choice in OpenAI chat's shape (runtime/tools).

    Raises:
        InvalidRequest: a tool that is not a named function (built-in tools do not run here).
    """
    tools = []
    for i, tool in enumerate(request.tools or []):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise InvalidRequest(
                f"tools[{i}] must be {{'type': 'function', 'name': ...}}; "
                f"{tool.get('type')!r} tools are not supported",
                param=f"tools[{i}]",
            )
        function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        tools.append({"type": "function", "function": function})
    return tools or None, request.tool_choice


def to_params(request: ResponsesRequest) -> dict:
    """GenerationParams fields; `text.format` goes through the same guidance as chat's
    `response_format` (a JSON grammar without free whitespace).

    Raises:
        InvalidRequest: json_schema without a schema.
    """
    refuse_serial_tool_calls(request.parallel_tool_calls, request.tools)
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


def to_turn(request: ResponsesRequest, conversation: list[dict]) -> Turn:
    """The request, after its stored `conversation`, as the shared seam's Turn.

    OpenAI's default length is "until the context is full": open-ended, capped (turn.py).
    """
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    messages += conversation
    tools, tool_choice = chat_tools(request)
    fields = to_params(request)
    requested = fields.pop("max_tokens", None)
    params = msgspec.convert(fields, GenerationParams)
    return Turn(
        request.model,
        params,
        messages,
        tools=tools,
        tool_choice=tool_choice,
        open_ended=True,
        max_tokens=requested,
    )


def _text_config(request: ResponsesRequest) -> dict:
    fmt = request.text.format if request.text is not None else None
    if fmt is None:
        return {"format": {"type": "text"}}
    return {"format": msgspec.to_builtins(fmt)}


def reasoning_item(item_id: str, text: str | None, status: str) -> dict:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(parsed: Any, status: str, message_id: str | None = None) -> list[dict]:
    """A parsed reply (runtime/tools ParsedOutput) as Response output items: reasoning, the
    message (when there is text, or nothing else), then one function_call per tool call."""
    items = []
    if parsed.reasoning is not None:
        items.append(reasoning_item(f"rs_{uuid.uuid4().hex}", parsed.reasoning, "completed"))
    if parsed.content or not parsed.tool_calls:
        items.append(output_message(message_id or new_message_id(), parsed.content or "", status))
    for call in parsed.tool_calls:
        items.append(
            function_call_item(
                f"fc_{uuid.uuid4().hex}", call.id, call.name, call.arguments, "completed"
            )
        )
    return items


def assistant_turn(items: list[dict]) -> list[dict]:
    """The reply's output items as stored conversation messages (what the next turn sees)."""
    return item_messages(
        [
            item if item["type"] != "message" else {**item, "role": "assistant"}
            for item in items
            if item["type"] in ("message", "function_call")
        ]
    )


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
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
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

    def error(self, code: str, message: str) -> tuple[str, dict]:
        return self._event("error", code=code, message=message, param=None)


class OutputStream:
    """Streamed reply pieces (runtime/tools Deltas) -> Responses output items and their events.

    Items open as their first piece arrives (reasoning, message, each function call) and
    close when another kind starts or the reply ends; `begin(open_message=True)` opens the
    message at once (plain text, the order the stream had before tools). Sequence numbers
    come from the shared `ResponseEvents`.
    """

    def __init__(self, events: ResponseEvents):
        self.events = events
        self.items: list[dict] = []  # closed items, in output order
        self._open: dict | None = None
        self._text: list[str] = []

    def begin(self, *, open_message: bool) -> list[tuple[str, dict]]:
        response = self.events.body("in_progress", [], None)
        sent = [
            self.events._event("response.created", response=response),
            self.events._event("response.in_progress", response=response),
        ]
        return sent + (self._start("message") if open_message else [])

    @property
    def _index(self) -> int:
        return len(self.items)

    def _place(self) -> dict:
        assert self._open is not None, "an item is open while its events are sent"
        return {"item_id": self._open["id"], "output_index": self._index}

    def _start(self, kind: str, call: Any = None) -> list[tuple[str, dict]]:
        sent = self._close("completed")
        if kind == "message":
            item = output_message(self.events.message_id, "", "in_progress")
        elif kind == "reasoning":
            item = reasoning_item(f"rs_{uuid.uuid4().hex}", None, "in_progress")
        else:
            item_id = f"fc_{uuid.uuid4().hex}"
            item = function_call_item(item_id, call.id, call.name, "", "in_progress")
        self._open, self._text = item, []
        sent.append(
            self.events._event("response.output_item.added", output_index=self._index, item=item)
        )
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            sent.append(
                self.events._event(
                    "response.content_part.added", **self._place(), content_index=0, part=part
                )
            )
        return sent

    def feed(self, delta: Any) -> list[tuple[str, dict]]:
        """One Delta: content, reasoning, or a tool call's id/name and argument fragment."""
        if delta.index is not None:
            sent = []
            if delta.id is not None:
                sent += self._start("function_call", delta)
            if delta.arguments:
                self._text.append(delta.arguments)
                sent.append(
                    self.events._event(
                        "response.function_call_arguments.delta",
                        **self._place(),
                        delta=delta.arguments,
                    )
                )
            return sent
        kind = "reasoning" if delta.reasoning is not None else "message"
        piece = delta.reasoning if delta.reasoning is not None else delta.content
        sent = [] if self._open is not None and self._open["type"] == kind else self._start(kind)
        if piece:
            self._text.append(piece)
            name = "reasoning_text" if kind == "reasoning" else "output_text"
            extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
            sent.append(
                self.events._event(
                    f"response.{name}.delta", **self._place(), content_index=0, delta=piece, **extra
                )
            )
        return sent

    def _close(self, status: str) -> list[tuple[str, dict]]:
        item, text = self._open, "".join(self._text)
        if item is None:
            return []
        place, sent = self._place(), []
        if item["type"] == "message":
            item = output_message(item["id"], text, status)
            sent.append(
                self.events._event(
                    "response.output_text.done", **place, content_index=0, text=text, logprobs=[]
                )
            )
            sent.append(
                self.events._event(
                    "response.content_part.done", **place, content_index=0, part=item["content"][0]
                )
            )
        elif item["type"] == "reasoning":
            item = reasoning_item(item["id"], text, "completed")
            sent.append(
                self.events._event(
                    "response.reasoning_text.done", **place, content_index=0, text=text
                )
            )
        else:
            item = {**item, "arguments": text, "status": "completed"}
            sent.append(
                self.events._event(
                    "response.function_call_arguments.done",
                    **place,
                    name=item["name"],
                    arguments=text,
                )
            )
        sent.append(
            self.events._event("response.output_item.done", output_index=self._index, item=item)
        )
        self.items.append(item)
        self._open, self._text = None, []
        return sent

    def closing(self, finish_reason: str | None, usage: dict) -> list[tuple[str, dict]]:
        """Close the open item (an empty message if nothing came), then `response.completed`
        carrying the whole Response (also what gets stored)."""
        status = final_status(finish_reason)
        sent = [] if self.items or self._open else self._start("message")
        sent += self._close(status)
        final = self.events.body(status, self.items, usage)
        return [*sent, self.events._event("response.completed", response=final)]
