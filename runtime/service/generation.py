"""The one generation path every chat-style API shares: name -> engine -> prompt -> chunks.

OpenAI chat completions, Responses, Anthropic Messages and Ollama's chat/generate all come
through here, so they share the engine, its queue, sampling, stop handling, metrics and
errors; each API only converts its wire shapes. Everything that can fail before generation
(the name, loading, the template, the prompt length, a full queue) raises here, before the
first byte of a response, so it gets a real status code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from runtime.engines.base import Chunk, GenerationParams
from runtime.errors import ContextTooLong, UnsupportedTask
from runtime.names import check_model_id

__all__ = ["ChatRun", "Reply", "chat_engine", "collect", "start_chat"]


@dataclass
class ChatRun:
    """A started generation: its model, its prompt, and the chunks still to come."""

    model_id: str
    engine: Any
    prompt_tokens: list[int]
    stream: Any  # async iterator of Chunk; aclose() cancels

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self.stream.__aiter__()

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass
class Reply:
    """A finished generation: its text, why it ended, and the usage of its last chunk."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)


async def chat_engine(manager: Any, model: str) -> Any:
    """The loaded chat engine for a model id or alias (loads on demand).

    Raises:
        InvalidName: a name with path characters.
        ModelNotFound: from the manager.
        UnsupportedTask: the model serves another task.
    """
    check_model_id(model)
    engine = await manager.get(model, "chat")
    served = getattr(engine, "task", "chat")
    if served != "chat":
        raise UnsupportedTask(f"model {model!r} serves {served}, not chat", param="model")
    return engine


def start_chat(
    engine: Any,
    messages: list[dict[str, Any]],
    params: GenerationParams | dict[str, Any],
    *,
    tools: list[dict[str, Any]] | None = None,
    context_limit: int | None = None,
) -> ChatRun:
    """Render `messages` with the model's template, encode, submit; chunks come from the run.

    `context_limit` narrows the model's context for this request (Ollama's `num_ctx`): the
    prompt must fit in it and generation stops at it.

    Raises:
        InvalidMessages: the chat template refused the messages.
        ContextTooLong, QueueFull: from the engine.
    """
    if isinstance(params, dict):
        params = msgspec.convert(params, type=GenerationParams)
    prompt = engine.render_prompt(messages, tools)
    tokens = engine.encode(prompt)
    if context_limit is not None:
        room = context_limit - len(tokens)
        if room < 1:
            raise ContextTooLong(
                f"prompt is {len(tokens)} tokens; the requested context is {context_limit}",
                param="num_ctx",
            )
        params = msgspec.structs.replace(params, max_tokens=min(params.max_tokens, room))
    return ChatRun(getattr(engine, "model_id", ""), engine, tokens, engine.stream(tokens, params))


async def collect(run: ChatRun) -> Reply:
    """Drain a run into one Reply (the non-streaming answer of every API)."""
    parts: list[str] = []
    ids: list[int] = []
    last = Chunk(prompt_tokens=len(run.prompt_tokens))
    try:
        async for chunk in run:
            parts.append(chunk.text)
            ids.extend(chunk.token_ids)
            last = chunk
    finally:
        await run.aclose()
    return Reply(
        text="".join(parts),
        finish_reason=last.finish_reason,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        cached_tokens=last.cached_tokens,
        token_ids=ids,
    )
