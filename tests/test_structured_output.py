"""Constrained decoding: schema-bound answers and forced tool calls are valid by construction.

Measured on tiny random-weight synthetic models (Qwen2.5 and Llama 3 families) with
onnxruntime-genai's Engine directly, then through the real service with the `openai` client.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime_genai as og
import pytest

from runtime.engines.prompt import load_chat_template
from runtime.store.metadata import ModelMetadata
from runtime.tools.calls import plan_tools, starts_in_reasoning
from runtime.tools.grammar import json_schema_guidance, tool_call_guidance
from runtime.tools.parsers import parse

FAMILIES = {"qwen2.5-0.5b": "qwen", "llama-3.2-1b": "llama3"}

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days", "unit"],
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
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    },
]
ASK = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]


@pytest.fixture(scope="module")
def built(genai_artifact):
    return genai_artifact


def _generate(artifact: Path, prompt: str, guidance: tuple[str, str], max_tokens: int = 256):
    model = og.Model(str(artifact))
    tokenizer = og.Tokenizer(model)
    engine = og.Engine(model)
    request = engine.create_request()
    options = og.TurnOptions(request)
    options.set_max_generated_tokens(max_tokens)
    options.set_do_sample(False)
    options.set_guidance(*guidance)
    request.begin_turn(tokenizer.encode(prompt), options)
    buffer, tokens, reason = engine.create_event_buffer(16), [], None
    while reason is None:
        engine.run(buffer)
        for i in range(len(buffer)):
            event = buffer[i]
            if event.flags & og.EngineEventFlags.TOKEN:
                tokens.append(int(event.token))
            if event.flags & og.EngineEventFlags.TURN_FINISHED:
                reason = event.finish_reason
    request.close()
    return tokenizer.decode(np.asarray(tokens, dtype=np.int32)), reason


def _schemas_in(guidance: tuple[str, str]) -> list[dict]:
    kind, text = guidance
    if kind == "json_schema":
        return [json.loads(text)]
    return [json.loads(line.split("%json", 1)[1]) for line in text.splitlines() if "%json" in line]


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("family", ["qwen", "hermes", "mistral", "llama3", "phi4", "none"])
def test_every_grammar_we_build_has_no_free_whitespace(family):
    guidances = [
        tool_call_guidance(family, TOOLS),
        tool_call_guidance(family, TOOLS[:1]),
        json_schema_guidance(WEATHER),
        json_schema_guidance({"type": "object"}),  # response_format json_object
    ]
    for guidance in guidances:
        schemas = _schemas_in(guidance)
        assert schemas, guidance
        for schema in schemas:
            assert schema["x-guidance"]["whitespace_flexible"] is False


def test_unbounded_integers_get_i_json_bounds_so_digit_runs_end():
    schema = json.loads(
        json_schema_guidance(
            {
                "type": "object",
                "properties": {"n": {"type": "integer"}, "m": {"type": "integer", "minimum": 0}},
            }
        )[1]
    )
    n, m = schema["properties"]["n"], schema["properties"]["m"]
    assert (n["minimum"], n["maximum"]) == (-(2**53) + 1, 2**53 - 1)
    assert m["minimum"] == 0 and m["maximum"] == 2**53 - 1


@pytest.mark.parametrize("alias", list(FAMILIES))
def test_strict_json_schema_on_random_weights_validates_and_ends_with_eos(built, alias):
    artifact = built(alias)
    prompt = load_chat_template(artifact).render(ASK)
    text, reason = _generate(artifact, prompt, json_schema_guidance(WEATHER))
    assert reason == og.FinishReason.EOS, text
    jsonschema.validate(json.loads(text), WEATHER)
    # No whitespace the grammar could have added: the reply is already compact JSON.
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("alias", list(FAMILIES))
@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "add"}}],
    ids=["required", "named"],
)
def test_forced_tool_call_on_random_weights_parses_and_validates(built, alias, choice):
    artifact = built(alias)
    metadata = ModelMetadata(tool_parser=FAMILIES[alias])
    plan = plan_tools(TOOLS, choice, metadata=metadata, artifact=artifact)
    prompt = load_chat_template(artifact).render(ASK, TOOLS)
    text, reason = _generate(artifact, prompt, plan.guidance)
    assert reason == og.FinishReason.EOS, text
    parsed = parse(text, plan.format, in_reasoning=starts_in_reasoning(prompt))
    assert len(parsed.tool_calls) == 1, text
    call = parsed.tool_calls[0]
    if choice != "required":
        assert call.name == "add"
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.name)
    jsonschema.validate(json.loads(call.arguments), schema)


# --- through the service ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["agents-qwen", "agents-llama"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_strict_json_schema_answers_validate_through_the_service(
    agent_models, openai_client, model, stream
):
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "strict": True, "schema": WEATHER},
    }
    reply = openai_client.chat.completions.create(
        model=model,
        messages=ASK,
        max_tokens=200,
        temperature=0,
        response_format=response_format,
        stream=stream,
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
    else:
        assert reply.choices[0].finish_reason == "stop"
        text = reply.choices[0].message.content
    jsonschema.validate(json.loads(text), WEATHER)


def test_a_schema_guidance_cannot_compile_is_a_400(agent_models, openai_client):
    import openai

    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(
            model="agents-qwen", messages=ASK, response_format=bad
        )
