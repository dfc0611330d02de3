"""OpenAI's Responses API requests, and their pure conversion to the shared seam's Turn.

`input_items` normalises `input` (a string or items, as clients send it) into stored items,
`item_messages` those into chat messages, `to_turn` makes the Turn; the way back is
`output.py`. Never touches the service, the manager, the store or an engine.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runtime.engines.base import GenerationParams
from runtime.errors import InvalidRequest
from runtime.service.bounds import MaxTokens, Temperature, refuse_serial_tool_calls
from runtime.service.turn import Turn, chat_call, given, new_id
from runtime.tools.grammar import reply_format_guidance

__all__ = [
    "InputItem",
    "ResponsesRequest",
    "check_call_outputs",
    "content_text",
    "function_call_item",
    "input_items",
    "item_messages",
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
    temperature: Temperature | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def content_text(content: Any) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content or ())


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    """A function_call item, as the input lists it and the output streams and stores it."""
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _stored_item(item: InputItem) -> dict | None:
    if item.type == "function_call":
        assert item.call_id and item.name and item.arguments is not None  # __post_init__
        item_id = item.id or new_id("fc_")
        return function_call_item(item_id, item.call_id, item.name, item.arguments, "completed")
    if item.type == "function_call_output":
        return {
            "id": item.id or new_id("fco_"),
            "type": "function_call_output",
            "call_id": item.call_id,
            "output": content_text(item.output),
            "status": "completed",
        }
    if item.type == "reasoning":
        return None  # the model does not see its past reasoning (chat templates drop it too)
    part = "output_text" if item.role == "assistant" else "input_text"
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": item.role,
        "status": "completed",
        "content": [{"type": part, "text": content_text(item.content)}],
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
            call = chat_call(item["call_id"], item["name"], item["arguments"])
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
            role = "system" if item["role"] == "developer" else item["role"]
            text = "".join(part["text"] for part in item["content"])
            messages.append({"role": role, "content": text})
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


def chat_tools(request: ResponsesRequest) -> list[dict] | None:
    """The request's function tools in OpenAI chat's shape (tool_choice already is).

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
    return tools or None


def to_turn(request: ResponsesRequest, conversation: list[dict]) -> Turn:
    """The request, after its stored `conversation`, as the shared seam's Turn: open-ended,
    as OpenAI's default length is "until the context is full" (turn.py caps it).

    Raises:
        InvalidRequest: json_schema without a schema; UnsupportedParameter: serial tool calls.
    """
    refuse_serial_tool_calls(request.parallel_tool_calls, request.tools)
    fmt = (request.text.format if request.text is not None else None) or TextFormat()
    guidance = reply_format_guidance(
        fmt.type, fmt.schema_, where="text.format", param="text.format.schema"
    )
    params = GenerationParams(guidance=guidance, **given(request, "temperature", "top_p"))
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    return Turn(
        request.model,
        params,
        messages + conversation,
        tools=chat_tools(request),
        tool_choice=request.tool_choice,
        open_ended=True,
        max_tokens=request.max_output_tokens,
    )
