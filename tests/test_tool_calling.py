"""Tool calling through the real service with the real `openai` client (Qwen2.5 and Llama 3 families).

The models are tiny random-weight synthetic checkpoints, so a tool call only happens because
`tool_choice` "required" or a named function constrains generation (runtime/tools/grammar.py).
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "add", "description": "Add two integers", "parameters": ADD},
    },
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]
MODELS = ["agents-qwen", "agents-llama"]  # registered by conftest.agent_models


def _create(client: openai.OpenAI, model: str, **kwargs):
    kwargs = {"messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 200, **kwargs}
    return client.chat.completions.create(model=model, **kwargs)


def _check_call(call, name: str | None = None) -> dict:
    assert call.type == "function" and call.id
    if name is not None:
        assert call.function.name == name
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


@pytest.mark.parametrize("model", MODELS)
def test_required_tool_choice_returns_a_call_whose_arguments_validate(
    agent_models, openai_client, model
):
    reply = _create(openai_client, model, tool_choice="required")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    _check_call(choice.message.tool_calls[0])


@pytest.mark.parametrize("model", MODELS)
def test_streamed_argument_deltas_concatenate_to_the_same_json(agent_models, openai_client, model):
    whole = _create(openai_client, model, tool_choice="required").choices[0].message.tool_calls[0]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in _create(openai_client, model, tool_choice="required", stream=True):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:
                assert delta.id and delta.function.name, "a call's first delta names it"
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            calls[delta.index]["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert len(calls) == 1
    streamed = calls[0]
    assert (streamed["name"], streamed["arguments"]) == (
        whole.function.name,
        whole.function.arguments,
    )
    jsonschema.validate(json.loads(streamed["arguments"]), SCHEMAS[streamed["name"]])


@pytest.mark.parametrize("model", MODELS)
def test_a_named_function_is_the_one_called(agent_models, openai_client, model):
    reply = _create(
        openai_client, model, tool_choice={"type": "function", "function": {"name": "add"}}
    )
    _check_call(reply.choices[0].message.tool_calls[0], "add")


@pytest.mark.parametrize("model", MODELS)
def test_auto_and_none_never_fail_and_none_never_calls(agent_models, openai_client, model):
    auto = _create(openai_client, model, max_tokens=24)
    assert auto.choices[0].finish_reason in ("stop", "length", "tool_calls")
    none = _create(openai_client, model, tool_choice="none", max_tokens=24)
    assert not none.choices[0].message.tool_calls
    assert none.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("model", MODELS)
def test_tool_results_in_history_go_back_through_the_template(agent_models, openai_client, model):
    first = _create(openai_client, model, tool_choice="required").choices[0].message
    call = first.tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21})},
    ]
    follow_up = _create(openai_client, model, messages=history, max_tokens=16)
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert (
        follow_up.usage.prompt_tokens
        > _create(openai_client, model, max_tokens=1).usage.prompt_tokens
    )


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function"}}, "tool_choice"),
    ],
    ids=["unknown-function", "unknown-choice", "unnamed-choice"],
)
def test_bad_tool_choice_is_a_400_naming_the_field(agent_models, openai_client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        _create(openai_client, "agents-qwen", **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param


def test_required_without_tools_is_a_400(agent_models, openai_client):
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(
            model="agents-qwen", messages=ASK, tool_choice="required"
        )


def test_r1_thinking_comes_back_as_reasoning_content_not_content(agent_models, openai_client):
    # The R1 distill template opens <think> in the prompt; a random-weight model never closes
    # it, so everything it writes is reasoning (vLLM's and llama.cpp's reading too).
    plain = openai_client.chat.completions.create(
        model="agents-r1", messages=ASK, max_tokens=12, temperature=0
    )
    message = plain.choices[0].message
    reasoning = message.model_extra.get("reasoning_content")
    assert reasoning and not message.content
    streamed = openai_client.chat.completions.create(
        model="agents-r1", messages=ASK, max_tokens=12, temperature=0, stream=True
    )
    parts = [
        c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in streamed if c.choices
    ]
    assert "".join(parts) == reasoning
