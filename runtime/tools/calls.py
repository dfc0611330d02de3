"""The seam between wire APIs and tool calling: what to render, how to guide, how to read.

`runtime/service/turn.py` calls `plan_tools` and `prepare_messages` before rendering the
prompt, then reads the reply in the plan's `format` (parsers.py), for every client API alike.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import InvalidMessages, InvalidRequest
from runtime.tools.formats import ToolFormat, family_format, forced_format, tool_format
from runtime.tools.grammar import (
    MAX_SCHEMA_DEPTH,
    json_depth,
    marker_tokens,
    tool_call_guidance,
)
from runtime.tools.parsers import THINK_OPEN

if TYPE_CHECKING:
    from runtime.store.metadata import ModelMetadata

__all__ = [
    "NO_TOOLS",
    "ToolPlan",
    "plan_tools",
    "prepare_messages",
    "starts_in_reasoning",
]


@dataclass
class ToolPlan:
    """What a request's `tools`/`tool_choice` mean for one model: the chat template's `tools`,
    the guidance (or None), and the `format` the reply is read in ("none" when tool calls are
    off: the reply is still read for `<think>` reasoning)."""

    template_tools: list[dict[str, Any]] | None
    guidance: tuple[str, str] | None
    format: ToolFormat


NO_TOOLS = ToolPlan(None, None, tool_format("none"))


def _check_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """`tools` themselves, once each is a function with a name and a JSON-object schema."""
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidRequest(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}",
                param=f"tools[{i}]",
            )
        parameters, where = function.get("parameters"), f"tools[{i}].function.parameters"
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(f"{where} must be a JSON schema object", param=where)
        if json_depth(parameters) > MAX_SCHEMA_DEPTH:
            raise InvalidRequest(
                f"{where} is nested deeper than {MAX_SCHEMA_DEPTH} levels", param=where
            )
    return tools


def _chosen_name(tool_choice: Any) -> str:
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else tool_choice.get("name")
        if isinstance(name, str) and name:
            return name
    raise InvalidRequest(
        "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}",
        param="tool_choice",
    )


def plan_tools(
    tools: list[Any] | None,
    tool_choice: Any,
    *,
    metadata: ModelMetadata,
    artifact: Path | None = None,
) -> ToolPlan:
    """Decide rendering, guidance and parsing for `tools` + `tool_choice` on one model.

    "auto" (the default with tools) renders the tools and parses whatever the model writes;
    "none" neither renders nor parses them; "required" or a named function also constrains
    generation to one call in the family's syntax (grammar.tool_call_guidance).

    Raises:
        InvalidRequest: malformed tools, an unknown tool_choice, or a named function that
            is not among the tools.
    """
    tools = _check_tools(tools or [])
    if tool_choice is None:
        tool_choice = "auto" if tools else "none"
    if tool_choice == "none" or (not tools and tool_choice == "auto"):
        return NO_TOOLS
    if not tools:
        raise InvalidRequest("tool_choice needs tools", param="tool_choice")
    # The parser the manifest names (an older manifest: its family's usual one).
    family = metadata.tool_parser or family_format(metadata.family)
    if tool_choice == "auto":
        return ToolPlan(tools, None, tool_format(family))
    chosen = tools
    if tool_choice != "required":
        name = _chosen_name(tool_choice)
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not among the tools", param="tool_choice"
            )
    tokens = marker_tokens(artifact) if artifact is not None else {}
    guidance = tool_call_guidance(family, chosen, tokens=tokens)
    return ToolPlan(tools, guidance, forced_format(family))


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them (Hugging Face convention).

    OpenAI sends a call's `arguments` as a JSON string; templates render them with
    `tojson`, so they get the decoded object (as vLLM does), or the string if it is not JSON.

    Raises:
        InvalidMessages: an assistant tool call without a function name or arguments (the
            template would render `Undefined` and fail with a 500).
    """
    prepared = []
    for i, message in enumerate(messages):
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and calls:
            for j, call in enumerate(calls):
                _check_past_call(call, f"messages[{i}].tool_calls[{j}]")
            message = {**message, "tool_calls": [_template_call(c) for c in calls]}
        prepared.append(message)
    return prepared


def _check_past_call(call: Any, where: str) -> None:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidMessages(f"{where} needs function.name", param=f"{where}.function.name")
    if not isinstance(function.get("arguments"), str | dict):
        raise InvalidMessages(
            f"{where} needs function.arguments (a JSON string or object)",
            param=f"{where}.function.arguments",
        )


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # a malformed call is passed to the template as text
            function["arguments"] = json.loads(arguments)
    return {
        **call,
        "type": call.get("type", "function"),
        "function": function,
        "name": function.get("name"),
        "arguments": function.get("arguments"),
    }


def starts_in_reasoning(prompt: str) -> bool:
    """DeepSeek-R1 style templates open `<think>` in the prompt; the reply starts inside it."""
    return prompt.rstrip().endswith(THINK_OPEN)
