"""Anthropic Messages API on the wire, and its pure conversion to and from the engine.

`to_turn(request)` makes the shared seam's Turn; `MessageBody`, `content_blocks` and
`BlockStream` shape the reply. `system` and `content` stay "a string or a list of blocks"
unions, as Anthropic's clients send them. Never touches the service, manager or an engine.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runtime.engines.base import GenerationParams
from runtime.errors import InvalidRequest
from runtime.service.bounds import MaxTokens, StopList, VocabTopK
from runtime.service.replies import arguments_object
from runtime.service.turn import Turn, chat_call, given

__all__ = [
    "BlockStream",
    "CountTokens",
    "CountTokensRequest",
    "MessageBody",
    "MessagesRequest",
    "Usage",
    "content_blocks",
    "event",
    "stop_reason",
    "to_turn",
]


class TextBlock(msgspec.Struct, kw_only=True, tag="text", tag_field="type"):
    """Content blocks this service reads: text, tool_use, tool_result, thinking (history;
    not shown to the model). Any other `type` (images, documents) is a 400."""

    text: str


class ToolUseBlock(msgspec.Struct, kw_only=True, tag="tool_use", tag_field="type"):
    id: Annotated[str, Meta(min_length=1, max_length=256)]
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, kw_only=True, tag="tool_result", tag_field="type"):
    tool_use_id: Annotated[str, Meta(min_length=1, max_length=256)]
    content: str | list[TextBlock] = ""
    is_error: bool = False


class ThinkingBlock(msgspec.Struct, kw_only=True, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


Block = TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock


class Message(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(msgspec.Struct, kw_only=True):
    """A client tool; server tools (`type` other than "custom") are a 400 at `_chat_tools`."""

    name: Annotated[str, Meta(min_length=1, max_length=128)]
    description: str | None = None
    input_schema: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})
    type: str | None = None


class ToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class CountTokensRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/messages/count_tokens`: the prompt part of a MessagesRequest."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[ToolDef], Meta(max_length=128)] | None = None


class MessagesRequest(CountTokensRequest, kw_only=True):
    """`POST /v1/messages`: `max_tokens` is required, as Anthropic requires it."""

    max_tokens: MaxTokens
    stop_sequences: StopList | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: VocabTopK | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    tool_choice: ToolChoice | None = None


def _text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.text for block in content if isinstance(block, TextBlock))


def _chat_messages(message: Message) -> list[dict]:
    """One Anthropic message as chat messages: tool_result blocks are `tool` messages (before
    the user's text, as Anthropic orders them), tool_use blocks the assistant's tool_calls."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    results = [
        {"role": "tool", "tool_call_id": b.tool_use_id, "content": _text(b.content)}
        for b in message.content
        if isinstance(b, ToolResultBlock)
    ]
    calls = [
        chat_call(b.id, b.name, b.input) for b in message.content if isinstance(b, ToolUseBlock)
    ]
    text = _text(message.content)
    if calls:
        return [*results, {"role": message.role, "content": text, "tool_calls": calls}]
    if results and not text:
        return results
    return [*results, {"role": message.role, "content": text}]


def _chat_tools(request: CountTokensRequest) -> tuple[list[dict] | None, Any]:
    """The request's tools and tool_choice in OpenAI chat's shape (runtime/tools reads that).

    auto -> "auto", any -> "required", tool -> that function, none -> "none".

    Raises:
        InvalidRequest: a server tool (web search, code execution, ...) or `tool` without a name.
    """
    tools = []
    for i, tool in enumerate(request.tools or []):
        if tool.type not in (None, "custom"):
            raise InvalidRequest(
                f"tools[{i}]: {tool.type!r} tools are not supported", param=f"tools[{i}].type"
            )
        function = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    choice = getattr(request, "tool_choice", None)
    if choice is None:
        return tools or None, None
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type 'tool' needs a name", param="tool_choice")
        return tools or None, {"type": "function", "function": {"name": choice.name}}
    return tools or None, {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def to_turn(request: CountTokensRequest) -> Turn:
    """The request as the shared generation seam's Turn (count_tokens: its prompt only).

    `system` becomes a leading system message (Anthropic keeps it outside `messages`).
    Anthropic's default temperature is 1.0, as is ours, so an absent value stays absent.
    """
    messages: list[dict] = []
    if request.system is not None and (system := _text(request.system)):
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        messages.extend(_chat_messages(message))
    params = GenerationParams(max_tokens=1)  # count_tokens renders, never generates
    if isinstance(request, MessagesRequest):
        sampling = given(request, "temperature", "top_p", "top_k")
        stop = list(request.stop_sequences or [])
        params = GenerationParams(max_tokens=request.max_tokens, stop=stop, **sampling)
    tools, tool_choice = _chat_tools(request)
    return Turn(request.model, params, messages, tools=tools, tool_choice=tool_choice)


def stop_reason(
    finish_reason: str | None, stop_sequence: str | None, tool_use: bool = False
) -> str:
    """Anthropic's `stop_reason` for an engine finish reason ("tool_use" when the reply that
    ended normally called tools)."""
    if finish_reason == "length":
        return "max_tokens"
    if tool_use and finish_reason == "stop" and stop_sequence is None:
        return "tool_use"
    return "stop_sequence" if stop_sequence is not None else "end_turn"


class Usage(msgspec.Struct, kw_only=True):
    input_tokens: int
    output_tokens: int


class CountTokens(msgspec.Struct, kw_only=True):
    input_tokens: int


class MessageBody(msgspec.Struct, kw_only=True):
    """The `message` object: a whole reply, or (no content yet) a stream's opening."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]] = []  # content_blocks(): thinking, text, tool_use
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage


def content_blocks(parsed: Any) -> list[dict]:
    """A parsed reply (runtime/tools ParsedOutput) as Anthropic content blocks: thinking, text
    (when there is any, or nothing else), one tool_use per call (its input as an object)."""
    blocks: list[dict] = []
    if parsed.reasoning is not None:
        blocks.append({**_EMPTY["thinking"], "thinking": parsed.reasoning})
    if parsed.content or not parsed.tool_calls:
        blocks.append({"type": "text", "text": parsed.content or ""})
    for call in parsed.tool_calls:
        input_ = arguments_object(call.arguments)
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": input_})
    return blocks


_EMPTY = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}


def event(kind: str, **fields: Any) -> tuple[str, dict]:
    """One stream event as (its name, its data), the data opening with the name as `type`."""
    return kind, {"type": kind, **fields}


class BlockStream:
    """Streamed reply pieces -> Anthropic content block events. A block starts as its first
    piece arrives (thinking, text, each tool_use) and stops when another starts or the reply
    ends; `begin(open_text=True)` starts the text block at once (a reply read as plain text).
    """

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None

    def begin(self, *, open_text: bool) -> list[tuple[str, dict]]:
        return self._start(_EMPTY["text"]) if open_text else []

    def _start(self, block: dict) -> list[tuple[str, dict]]:
        sent = self._stop()
        self.index += 1
        self.kind = block["type"]
        return [*sent, event("content_block_start", index=self.index, content_block=block)]

    def _stop(self) -> list[tuple[str, dict]]:
        if self.kind is None:
            return []
        self.kind = None
        return [event("content_block_stop", index=self.index)]

    def _delta(self, kind: str, key: str, text: str) -> tuple[str, dict]:
        return event("content_block_delta", index=self.index, delta={"type": kind, key: text})

    def feed(self, delta: Any) -> list[tuple[str, dict]]:
        if delta.index is not None:
            block = {"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}}
            sent = self._start(block) if delta.id is not None else []
            if delta.arguments:
                sent.append(self._delta("input_json_delta", "partial_json", delta.arguments))
            return sent
        thinking = delta.reasoning is not None
        kind, piece = ("thinking", delta.reasoning) if thinking else ("text", delta.content)
        sent = [] if self.kind == kind else self._start(_EMPTY[kind])
        if piece:
            sent.append(self._delta(f"{kind}_delta", kind, piece))
        return sent

    def end(self) -> list[tuple[str, dict]]:
        """Stop the open block (an empty text block when nothing came)."""
        sent = self._start(_EMPTY["text"]) if self.index < 0 else []
        return sent + self._stop()
