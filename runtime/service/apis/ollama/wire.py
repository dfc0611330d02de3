"""Ollama's API on the wire, and its pure conversion to and from the engine.

`to_turn` reads `/api/chat` and `/api/generate` bodies into the shared `Turn`; the `*_line`
functions shape NDJSON lines as the `ollama` package parses them. Nothing here touches the
service, the manager or an engine. `format` and `keep_alive` stay unions: clients send both.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from runtime.engines.base import GenerationParams
from runtime.errors import InvalidRequest, UnsupportedParameter
from runtime.names import check_model_id
from runtime.service.bounds import (
    MAX_INPUTS,
    MAX_TOKENS_BOUND,
    Seed,
    StopList,
    Temperature,
    VocabTopK,
)
from runtime.service.replies import arguments_object
from runtime.service.turn import ContextLimit, Turn, chat_call, given
from runtime.tools.grammar import json_schema_guidance

__all__ = [
    "ChatLine",
    "ChatRequest",
    "Details",
    "Embed",
    "EmbedRequest",
    "Embedding",
    "EmbeddingsRequest",
    "GenerateLine",
    "GenerateRequest",
    "Listed",
    "Options",
    "PullRequest",
    "PullStatus",
    "Running",
    "Show",
    "ShowRequest",
    "Version",
    "chat_line",
    "format_guidance",
    "generate_line",
    "iso_time",
    "model_name",
    "ollama_tool_calls",
    "parse_keep_alive",
    "reply_fields",
    "to_turn",
]


class Options(msgspec.Struct, kw_only=True):
    """The `options` this service honours; Ollama's others (num_gpu, mirostat, …) are ignored."""

    num_predict: Annotated[int, Meta(ge=-2, le=MAX_TOKENS_BOUND)] | None = None
    temperature: Temperature | None = None
    top_k: VocabTopK | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    seed: Seed | None = None  # Ollama's -1 = random: any int64, folded as OpenAI's is
    stop: StopList | None = None
    num_ctx: Annotated[int, Meta(ge=1, le=MAX_TOKENS_BOUND)] | None = None
    # Penalties the engine has no sampler for: only their neutral values are accepted (refused
    # with a 400 naming the field otherwise, rather than silently ignored).
    repeat_penalty: Annotated[float, Meta(ge=0.0, le=10.0)] | None = None  # neutral: 1
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None  # neutral: 0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None  # neutral: 0


class Message(msgspec.Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # [{"function": {"name", "arguments": {}}}]
    tool_name: str | None = None  # on role "tool": which function answered
    thinking: str | None = None  # a past reply's reasoning: not shown to the model


class _Generate(msgspec.Struct, kw_only=True):
    """What `/api/chat` and `/api/generate` share (both stream unless `stream` is false)."""

    model: str
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: float | str | None = None


class ChatRequest(_Generate, kw_only=True):
    """`POST /api/chat`."""

    messages: list[Message] = msgspec.field(default_factory=list)
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None  # OpenAI's shape
    # Not Ollama's (it has none): OpenAI's tool_choice, so a caller can force a call.
    tool_choice: str | dict[str, Any] | None = None
    think: bool | str | None = None  # accepted; thinking is returned when the model writes it


class GenerateRequest(_Generate, kw_only=True):
    """`POST /api/generate`: an empty prompt only loads (or, with keep_alive 0, unloads)."""

    prompt: str = ""
    system: str | None = None
    raw: bool = False


class ShowRequest(msgspec.Struct, kw_only=True):
    """A body naming one model: `/api/show` and `/api/delete` (pull adds its flags)."""

    model: str = ""
    name: str = ""  # older clients send `name`

    def model_id(self) -> str:
        return model_name(self.model or self.name)


class PullRequest(ShowRequest, kw_only=True):
    stream: bool = True
    insecure: bool = False


class EmbedRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | Annotated[list[str], Meta(min_length=1, max_length=MAX_INPUTS)]
    truncate: bool = True
    keep_alive: float | str | None = None


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: str
    keep_alive: float | str | None = None


def model_name(raw: str) -> str:
    """A request's model name as this project's id or alias.

    Ollama clients append `:latest` to bare names; this project's ids have no such tag.

    Raises:
        InvalidRequest: no name. InvalidName: path characters.
    """
    if not raw:
        raise InvalidRequest("'model' is required", param="model")
    return check_model_id(raw.removesuffix(":latest"))


# --- request -> Turn ------------------------------------------------------------------------------
PENALTIES = {"repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def format_guidance(value: str | dict[str, Any] | None) -> tuple[str, str] | None:
    """Ollama's `format` as the same guidance chat's `response_format` uses: `"json"` is any
    object, a dict a schema."""
    if value is None or value == "":
        return None
    if value == "json":
        return json_schema_guidance({"type": "object"})
    if isinstance(value, dict):
        return json_schema_guidance(value)
    raise InvalidRequest(f"format must be 'json' or a JSON schema, got {value!r}", param="format")


def _chat_message(message: Message, index: int) -> dict:
    """An Ollama message as a chat message; its tool calls get ids (Ollama's have none), and
    the tool message after them answers by position."""
    chat: dict = {"role": message.role, "content": message.content}
    if message.tool_calls:
        chat["tool_calls"] = []
        for i, call in enumerate(message.tool_calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidRequest(
                    "tool_calls entries must be {'function': {'name': ..., 'arguments': {...}}}",
                    param=f"messages[{index}].tool_calls[{i}]",
                )
            arguments = function.get("arguments") or {}
            chat["tool_calls"].append(chat_call(f"call_{index}_{i}", function["name"], arguments))
    if message.role == "tool" and message.tool_name:
        chat["name"] = message.tool_name
    return chat


def to_turn(request: ChatRequest | GenerateRequest) -> Turn:
    """The request as the shared seam's Turn: Ollama's length is open-ended (no num_predict,
    or -1/-2: until the context is full, capped), and `num_ctx` is the client's own context.
    A templated generate is a one-turn chat (Ollama renders system + prompt the same way)."""
    if isinstance(request, ChatRequest):
        messages = [_chat_message(m, i) for i, m in enumerate(request.messages)]
        tools, tool_choice = request.tools, request.tool_choice
    else:
        system = [{"role": "system", "content": request.system}] if request.system else []
        messages = [*system, {"role": "user", "content": request.prompt}]
        tools, tool_choice = None, None
    options = request.options or Options()
    for name, neutral in PENALTIES.items():
        if (value := getattr(options, name)) is not None and value != neutral:
            raise UnsupportedParameter(
                f"options.{name} is not supported by this service (the engine has no such "
                f"sampler); leave it out or send {neutral:g}",
                param=f"options.{name}",
            )
    params = given(options, "temperature", "top_k", "top_p", "stop")
    if options.seed is not None and options.seed >= 0:
        params["seed"] = options.seed % (2**31)  # the engine's seed is 32-bit
    if (guidance := format_guidance(request.format)) is not None:
        params["guidance"] = guidance
    return Turn(
        model_name(request.model),
        msgspec.convert(params, GenerationParams),
        messages,
        tools=tools,
        tool_choice=tool_choice,
        open_ended=True,
        max_tokens=options.num_predict if (options.num_predict or 0) > 0 else None,
        limit=ContextLimit(options.num_ctx, param="options.num_ctx", name="num_ctx"),
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: float | str | None) -> float | None:
    """Seconds a model stays loaded after this request: None = the service's TTL,
    `inf` = forever (a negative value), 0 = unload now. Strings are Go durations (`5m`, `1h30m`).

    Raises:
        InvalidRequest: an unreadable duration.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise InvalidRequest(
                    f"keep_alive {text!r} is not a duration like '5m' or '30s'", param="keep_alive"
                ) from None
            value = sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if value != value:  # NaN: no duration at all (and it would poison the idle reaper)
        raise InvalidRequest(
            "keep_alive must be a number of seconds or a duration", param="keep_alive"
        )
    if value < 0:
        return float("inf")
    return float(value)


# --- engine output -> NDJSON lines ------------------------------------------------------------
def iso_time() -> str:
    """Now, in RFC 3339 with a fraction (UTC, `Z`), as Ollama writes `created_at`."""
    return datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")


class Details(msgspec.Struct, kw_only=True):
    parent_model: str = ""
    format: str = "onnx"
    family: str
    families: list[str] | None
    parameter_size: str = ""  # no manifest records it
    quantization_level: str


class _Model(msgspec.Struct, kw_only=True):
    name: str
    model: str
    size: int
    digest: str
    details: Details


class ListedModel(_Model, kw_only=True):
    """One `/api/tags` model."""

    modified_at: str


class RunningModel(_Model, kw_only=True):
    """One `/api/ps` model."""

    expires_at: str
    size_vram: int
    context_length: int | None


class Listed(msgspec.Struct):
    models: list[ListedModel]


class Running(msgspec.Struct):
    models: list[RunningModel]


class Version(msgspec.Struct):
    version: str
    foundry: str


class Show(msgspec.Struct, kw_only=True):
    modelfile: str
    parameters: str
    template: str
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class PullStatus(msgspec.Struct):
    status: str


class Embed(msgspec.Struct, kw_only=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class Embedding(msgspec.Struct):
    embedding: list[float]


class ReplyMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str
    thinking: str | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET


class _Line(msgspec.Struct, kw_only=True):
    """Either API's line; the last one (`done: true`) with `done_reason` and the counters
    (durations in nanoseconds)."""

    model: str
    created_at: str = msgspec.field(default_factory=iso_time)
    done: bool
    done_reason: str | UnsetType = UNSET
    total_duration: int | UnsetType = UNSET
    load_duration: int | UnsetType = UNSET
    prompt_eval_count: int | UnsetType = UNSET
    prompt_eval_duration: int | UnsetType = UNSET
    eval_count: int | UnsetType = UNSET
    eval_duration: int | UnsetType = UNSET


class ChatLine(_Line, kw_only=True):
    message: ReplyMessage


class GenerateLine(_Line, kw_only=True):
    response: str
    thinking: str | UnsetType = UNSET


def chat_line(
    model: str,
    text: str = "",
    *,
    thinking: str | None = None,
    tool_calls: list[dict] | None = None,
    done: bool = False,
    **end: Any,  # the last line's done_reason and counters
) -> ChatLine:
    """One `/api/chat` line; the last has `done: true`, `done_reason` and the counters."""
    thought = UNSET if thinking is None else thinking
    message = ReplyMessage(content=text, thinking=thought, tool_calls=tool_calls or UNSET)
    return ChatLine(model=model, message=message, done=done, **end)


def ollama_tool_calls(calls: list[Any]) -> list[dict]:
    """Parsed tool calls (runtime/tools ToolCall) as Ollama's: arguments are an object."""
    return [
        {"function": {"name": c.name, "arguments": arguments_object(c.arguments)}} for c in calls
    ]


def reply_fields(parsed: Any) -> dict:
    """A parsed reply as `chat_line` keyword arguments: text, thinking, tool_calls."""
    return {
        "text": parsed.content or "",
        "thinking": parsed.reasoning,
        "tool_calls": ollama_tool_calls(parsed.tool_calls) or None,
    }


def generate_line(
    model: str,
    text: str = "",
    *,
    thinking: str | None = None,
    tool_calls: list[dict] | None = None,  # chat only; generate has no tools
    done: bool = False,
    **end: Any,
) -> GenerateLine:
    """One `/api/generate` line, shaped like `chat_line` with `response` for `message`."""
    thought = UNSET if thinking is None else thinking
    return GenerateLine(model=model, response=text, thinking=thought, done=done, **end)
