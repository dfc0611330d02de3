"""One chat turn with tools and reasoning, for the API layers that are not OpenAI chat.

Responses, Anthropic Messages and Ollama convert their request's tools into OpenAI's chat
shape and call `plan_turn`: it runs `runtime/tools/calls.py` (plan_tools, prepare_messages)
against the loaded engine, puts a forced call's grammar into the params (it outranks a
response format, as on /v1/chat/completions) and renders the prompt once. The turn then
reads the reply: `parse` for a finished one, `reader` for a stream (None when the model's
template knows neither tools nor `<think>`, so plain text passes through untouched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from runtime.engines.base import GenerationParams
from runtime.tools.calls import (
    ReplyStream,
    ToolPlan,
    parse_output,
    plan_tools,
    prepare_messages,
)
from runtime.tools.calls import finish_reason as tool_finish_reason
from runtime.tools.parsers import ParsedOutput

__all__ = ["PlannedTurn", "plan_turn"]


@dataclass
class PlannedTurn:
    plan: ToolPlan
    params: GenerationParams
    prompt: str  # the rendered prompt
    prompt_ids: list[int]
    reading: bool  # whether replies go through runtime/tools (tools, or a template with <think>)

    def parse(self, text: str) -> ParsedOutput:
        """A finished reply as content, reasoning and tool calls (never raises)."""
        if not self.reading:
            return ParsedOutput(content=text)
        return parse_output(text, self.plan, prompt=self.prompt)

    def reader(self) -> ReplyStream | None:
        return ReplyStream(self.plan, prompt=self.prompt) if self.reading else None

    @staticmethod
    def finish_reason(engine_reason: str | None, has_tool_calls: bool) -> str | None:
        """ "tool_calls" when a reply that ended normally called tools."""
        return tool_finish_reason(engine_reason, has_tool_calls)


def plan_turn(
    engine: Any,
    params: GenerationParams,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
) -> PlannedTurn:
    """Plan tools, render and encode the prompt for one turn on `engine`.

    `tools` are in OpenAI's chat shape (`{"type": "function", "function": {...}}`) and
    `tool_choice` in its vocabulary ("auto", "none", "required", {"function": {"name"}}).

    Raises:
        InvalidRequest: malformed tools or tool_choice (runtime/tools/calls.py).
    """
    plan = plan_tools(tools, tool_choice, metadata=engine.metadata, artifact=engine.path)
    if plan.guidance is not None:
        params = msgspec.structs.replace(params, guidance=plan.guidance)
    prompt = engine.render_prompt(prepare_messages(messages), plan.template_tools)
    reading = plan.template_tools is not None or "</think>" in getattr(
        engine.template, "source", ""
    )
    return PlannedTurn(plan, params, prompt, engine.encode(prompt), reading)
