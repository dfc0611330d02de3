"""OpenAI wire types for chat completions and completions, with bounds, and their conversion.

Unknown fields are ignored, as OpenAI does; every number has bounds, so a hostile value dies at
decode with a 400 naming the field. `to_turn()` is the pure seam to the engine (turn.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from runtime.engines.base import GenerationParams
from runtime.errors import InvalidRequest, UnsupportedParameter
from runtime.service.bounds import (
    DEFAULT_MAX_TOKENS,
    MAX_SEQUENCES,
    MaxTokens,
    MinTokens,
    N,
    Penalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    refuse_serial_tool_calls,
)
from runtime.service.replies import Piece, Reply
from runtime.service.turn import Turn, chat_call, given
from runtime.tools.grammar import reply_format_guidance

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ModelList",
    "ModelObject",
    "Usage",
]


# --- requests ------------------------------------------------------------------------
class TextPart(msgspec.Struct, kw_only=True):
    type: Literal["text", "input_text"]
    text: Annotated[str, Meta(max_length=10_000_000)]


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # issue 8 renders/parses these
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The message as a chat template sees it (text parts joined, `developer` as system)."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        extra = given(self, "name", "tool_calls", "tool_call_id")
        return {"role": role, "content": content or "", **extra}


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(max_length=64)] = "response"
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionDef(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


class SamplingFields(msgspec.Struct, kw_only=True):
    """Fields chat and completions share, and their conversion to GenerationParams."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    n: N = 1
    min_tokens: MinTokens = 0
    ignore_eos: bool = False
    presence_penalty: Penalty | None = None  # only 0: the engine has no such sampler
    frequency_penalty: Penalty | None = None  # only 0
    user: Annotated[str, Meta(max_length=256)] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _params(self, max_tokens: int | None, guidance: tuple[str, str] | None) -> GenerationParams:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):  # 0 (what some clients always send) changes nothing
                raise UnsupportedParameter(
                    f"{name} is not supported by this service (the engine has no such sampler)",
                    param=name,
                )
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(
            max_tokens=max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
            min_tokens=self.min_tokens,
            top_k=max(0, self.top_k or 0),
            seed=None if self.seed is None else self.seed % (2**31),
            stop=stop,
            ignore_eos=self.ignore_eos,
            guidance=guidance,
            **given(self, "temperature", "top_p"),  # unsent: the engine's defaults, 1.0
        )


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1, max_length=10_000)]
    max_completion_tokens: MaxTokens | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Meta(max_length=128)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None

    def to_generation_params(self) -> GenerationParams:
        """The engine's parameters for this request (pure; no model needed).

        Raises:
            UnsupportedParameter: logprobs, a penalty, serial tool calls.
            InvalidRequest: an unknown tool_choice; response_format json_schema without a schema.
        """
        if self.logprobs:
            raise UnsupportedParameter(
                "logprobs is not supported by this service", param="logprobs"
            )
        refuse_serial_tool_calls(self.parallel_tool_calls, self.tools)
        choice = self.tool_choice
        if isinstance(choice, str) and choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                f"tool_choice {choice!r} must be 'auto', 'none', 'required' or a named function",
                param="tool_choice",
            )
        # tool_choice "required"/named adds its grammar once the model (its tool syntax) is known:
        # runtime/tools/calls.py::plan_tools, called by the route.
        guidance = None
        if (fmt := self.response_format) is not None:
            schema = fmt.json_schema.schema if fmt.json_schema is not None else None
            guidance = reply_format_guidance(
                fmt.type, schema, where="response_format", param="response_format"
            )
        return self._params(self.max_completion_tokens or self.max_tokens, guidance)

    def to_turn(self) -> Turn:
        """This request as the shared generation seam's Turn (pure; no model needed), with
        every declared tool, whatever tool_choice says (plan_tools decides what to render)."""
        params = self.to_generation_params()
        messages = [m.to_dict() for m in self.messages]
        tools = [msgspec.to_builtins(tool) for tool in self.tools or []]
        return Turn(self.model, params, messages, None, tools, self.tool_choice, self.n)


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: (
        Annotated[str, Meta(max_length=10_000_000)]
        | Annotated[list[str], Meta(min_length=1, max_length=8)]
    )
    max_tokens: MaxTokens | None = 16  # OpenAI's default for completions
    echo: bool = False
    suffix: str | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    best_of: Annotated[int, Meta(ge=1, le=8)] | None = None

    def to_generation_params(self) -> GenerationParams:
        """Raises: UnsupportedParameter for logprobs, suffix, best_of > n."""
        if self.logprobs is not None:
            raise UnsupportedParameter(
                "logprobs is not supported by this service", param="logprobs"
            )
        if self.suffix:
            raise UnsupportedParameter("suffix is not supported by this service", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise UnsupportedParameter("best_of other than n is not supported", param="best_of")
        return self._params(self.max_tokens, None)

    def to_turn(self) -> Turn:
        """Raw prompts (no chat template), `n` sequences each."""
        params = self.to_generation_params()
        return Turn(self.model, params, prompts=list(self.prompts()), n=self.n)

    def prompts(self) -> list[str]:
        """Raises: InvalidRequest when prompts x n is more sequences than one request may run."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if len(prompts) * self.n > MAX_SEQUENCES:
            raise InvalidRequest(
                f"{len(prompts)} prompts x n={self.n} is {len(prompts) * self.n} sequences; "
                f"at most {MAX_SEQUENCES} per request",
                param="n",
            )
        return prompts


# --- responses ---------------------------------------------------------------------------
class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
        )


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET  # issue 8 fills it
    reasoning_content: str | UnsetType = UNSET


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


def chat_choice(index: int, reply: Reply) -> ChatChoice:
    """A finished reply as OpenAI's choice: the assistant `message` and its finish_reason."""
    parsed = reply.parsed
    message = AssistantMessage(content=parsed.content)
    if parsed.reasoning is not None:
        message.reasoning_content = parsed.reasoning
    if parsed.tool_calls:
        message.tool_calls = [chat_call(c.id, c.name, c.arguments) for c in parsed.tool_calls]
    return ChatChoice(index=index, message=message, finish_reason=reply.finished.finish_reason)


def chunk_delta(piece: Piece) -> Delta:
    """One reply piece as an OpenAI `choices[].delta` (content, reasoning or a call fragment)."""
    if piece.index is None:
        if piece.reasoning is not None:
            return Delta(reasoning_content=piece.reasoning)
        return Delta(content=piece.content)
    call: dict[str, Any] = {"index": piece.index}
    if piece.id is not None:
        call.update(id=piece.id, type="function")
    call["function"] = given(piece, "name", "arguments")
    return Delta(tool_calls=[call])


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType = UNSET


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | UnsetType = UNSET


class ModelObject(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "foundry"
    task: str | None = None  # extension: which routes serve it
    # extension: build facts (target, precision, synthetic, quality: the teacher-forced
    # figures on the corpus for quantized chat builds; compiler/quality.py)
    metadata: dict[str, Any] | None = None


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelObject]
