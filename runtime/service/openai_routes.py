"""OpenAI routes: /v1/models, /v1/chat/completions, /v1/completions.

Thin controllers: decode a protocol Struct, `start_generation` (everything that can fail,
before the first byte), then shape chunks into OpenAI's objects. Streams follow vLLM's
order: a role chunk per choice, content deltas, a chunk with finish_reason per choice,
an optional usage chunk, `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.response import Stream

from runtime.errors import ModelNotFound
from runtime.manager import ModelManager
from runtime.service.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Delta,
    ModelList,
    ModelObject,
    Usage,
    decode_body,
    new_id,
    now,
)
from runtime.service.streaming import Generation, collect, merge, sse_events, start_generation
from runtime.tools.calls import (
    ReplyStream,
    ToolPlan,
    finish_reason,
    parse_output,
    plan_tools,
    prepare_messages,
    wire_message,
)

__all__ = ["ROUTES"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@get("/v1/models", sync_to_thread=False)
def list_models(manager: ModelManager) -> ModelList:
    return ModelList(data=[_model_object(m) for m in manager.available()])


@get("/v1/models/{model_id:path}", sync_to_thread=False)
def retrieve_model(model_id: str, manager: ModelManager) -> ModelObject:
    model_id = model_id.lstrip("/")
    for cached in manager.available():
        if cached.model_id == model_id:
            return _model_object(cached)
    manager.resolve_name(
        model_id
    )  # raises ModelNotFound listing what exists (or resolves an alias)
    raise ModelNotFound(f"model {model_id!r} is not in the cache", param="model")


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any], manager: ModelManager) -> Response[Any]:
    body = decode_body(await request.body(), ChatCompletionRequest)
    params = body.to_generation_params()
    engine = await manager.get(body.model, task="chat")
    plan = plan_tools(
        body.all_tool_dicts(), body.tool_choice, metadata=engine.metadata, artifact=engine.path
    )
    if plan.guidance is not None:  # a forced call outranks response_format
        params = msgspec.structs.replace(params, guidance=plan.guidance)
    messages = prepare_messages(body.message_dicts())
    reading = _reads_reply(engine, plan)
    prompt = engine.render_prompt(messages, plan.template_tools) if reading else ""
    generation = await start_generation(
        manager, body.model, params, messages=messages, tools=plan.template_tools, n=body.n
    )
    completion_id, created = new_id("chatcmpl"), now()
    if body.stream:
        replies = [
            ReplyStream(plan, prompt=prompt) if reading else None for _ in generation.streams
        ]
        events = _chat_events(
            generation, completion_id, created, body.model, body.include_usage, replies
        )
        return Stream(
            sse_events(events, generation), media_type="text/event-stream", headers=SSE_HEADERS
        )
    results = await asyncio.gather(*(collect(s) for s in generation.streams))
    choices = [_chat_choice(i, r, plan, prompt if reading else None) for i, r in enumerate(results)]
    return Response(
        ChatCompletion(
            id=completion_id,
            created=created,
            model=body.model,
            choices=choices,
            usage=_usage(generation, results),
        )
    )


def _reads_reply(engine: Any, plan: ToolPlan) -> bool:
    """Whether replies go through runtime/tools (tool calls, or a template that knows <think>)."""
    return plan.template_tools is not None or "</think>" in getattr(engine.template, "source", "")


def _chat_choice(index: int, result: Any, plan: ToolPlan, prompt: str | None) -> ChatChoice:
    if prompt is None:
        return ChatChoice(
            index=index,
            message=AssistantMessage(content=result.text),
            finish_reason=result.finish_reason,
        )
    parsed = parse_output(result.text, plan, prompt=prompt)
    message = msgspec.convert(wire_message(parsed), AssistantMessage)
    return ChatChoice(
        index=index,
        message=message,
        finish_reason=finish_reason(result.finish_reason, bool(parsed.tool_calls)),
    )


def _wire_deltas(reply: ReplyStream, deltas: list[Any]) -> list[Delta]:
    return [msgspec.convert(reply.wire(d), Delta) for d in deltas]


async def _chat_events(
    generation: Generation,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    replies: list[ReplyStream | None] | None = None,
) -> AsyncIterator[ChatCompletionChunk]:
    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        extra: dict[str, Any] = {"usage": usage} if usage is not None else {}
        return ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=choices, **extra
        )

    for index in range(len(generation.streams)):
        yield chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])
    completion_tokens = [0] * len(generation.streams)
    cached = 0
    async for index, item in merge(generation.streams):
        completion_tokens[index] = item.completion_tokens
        cached = max(cached, item.cached_tokens)
        reply = replies[index] if replies else None
        if reply is not None:  # content, reasoning and tool-call deltas (runtime/tools)
            deltas = reply.feed(item.text) + (reply.finish() if item.finish_reason else [])
            for delta in _wire_deltas(reply, deltas):
                yield chunk([ChunkChoice(index=index, delta=delta)])
            if item.finish_reason:
                reason = finish_reason(item.finish_reason, reply.has_tool_calls)
                yield chunk([ChunkChoice(index=index, delta=Delta(), finish_reason=reason)])
            continue
        if item.text or item.finish_reason:
            delta = Delta(content=item.text) if item.text else Delta()
            yield chunk([ChunkChoice(index=index, delta=delta, finish_reason=item.finish_reason)])
    if include_usage:
        yield chunk([], Usage.of(generation.prompt_tokens, sum(completion_tokens), cached))


@post("/v1/completions", status_code=200)
async def completions(request: Request[Any, Any, Any], manager: ModelManager) -> Response[Any]:
    body = decode_body(await request.body(), CompletionRequest)
    params = body.to_generation_params()
    prompts = body.prompts()
    generations: list[Generation] = []
    try:
        for prompt in prompts:
            generations.append(
                await start_generation(manager, body.model, params, prompt=prompt, n=body.n)
            )
    except BaseException:
        for generation in generations:
            await generation.aclose()
        raise
    completion_id, created = new_id("cmpl"), now()
    combined = Generation(
        generations[0].model_id,
        sum(g.prompt_tokens for g in generations),
        [s for g in generations for s in g.streams],
    )
    echoes = [p if body.echo else "" for p in prompts for _ in range(body.n)]
    if body.stream:
        events = _completion_events(
            combined, echoes, completion_id, created, body.model, body.include_usage
        )
        return Stream(
            sse_events(events, combined), media_type="text/event-stream", headers=SSE_HEADERS
        )
    results = await asyncio.gather(*(collect(s) for s in combined.streams))
    choices = [
        CompletionChoice(index=i, text=echoes[i] + r.text, finish_reason=r.finish_reason)
        for i, r in enumerate(results)
    ]
    usage = Usage.of(
        combined.prompt_tokens,
        sum(r.completion_tokens for r in results),
        max((r.cached_tokens for r in results), default=0),
    )
    return Response(
        Completion(
            id=completion_id, created=created, model=body.model, choices=choices, usage=usage
        )
    )


async def _completion_events(
    generation: Generation,
    echoes: list[str],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[Completion]:
    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        extra: dict[str, Any] = {"usage": usage} if usage is not None else {}
        return Completion(id=completion_id, created=created, model=model, choices=choices, **extra)

    for index, echo in enumerate(echoes):
        if echo:
            yield chunk([CompletionChoice(index=index, text=echo, finish_reason=None)])
    completion_tokens = [0] * len(generation.streams)
    async for index, item in merge(generation.streams):
        completion_tokens[index] = item.completion_tokens
        if item.text or item.finish_reason:
            yield chunk(
                [CompletionChoice(index=index, text=item.text, finish_reason=item.finish_reason)]
            )
    if include_usage:
        yield chunk([], Usage.of(generation.prompt_tokens, sum(completion_tokens)))


def _usage(generation: Generation, results: list[Any]) -> Usage:
    """Usage as OpenAI counts it: the prompt once, however many choices."""
    return Usage.of(
        generation.prompt_tokens,
        sum(r.completion_tokens for r in results),
        max((r.cached_tokens for r in results), default=0),
    )


def _model_object(cached: Any) -> ModelObject:
    created = cached.manifest.created
    meta = cached.metadata
    validation = meta.get("validation") or {}
    facts = {
        "target": meta.get("target"),
        "precision": meta.get("precision"),
        "synthetic": bool(meta.get("synthetic", False)),
        "quality": validation.get("quality"),
    }
    return ModelObject(
        id=cached.model_id,
        created=_epoch(created),
        task=meta.get("task", "chat"),
        metadata=facts,
    )


def _epoch(stamp: str) -> int:
    import calendar
    import time

    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return 0


ROUTES: list[Any] = [list_models, retrieve_model, chat_completions, completions]
