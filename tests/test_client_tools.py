"""Tool calling and reasoning on the Responses, Anthropic Messages and Ollama APIs.

One implementation (runtime/tools via runtime/service/tool_turns.py) behind three wire
shapes. The pure conversions are tested on recorded replies; the service tests use the real
`openai`, `anthropic` and `ollama` clients on the session's random-weight tiny Qwen2.5,
where a tool call only happens because a forced tool choice constrains generation.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from runtime.service.apis.anthropic.wire import BlockStream, content_blocks
from runtime.service.apis.ollama.wire import reply_fields
from runtime.service.apis.responses.output import ResponseEvents, output_items
from runtime.service.apis.responses.wire import ResponsesRequest
from runtime.tools.formats import tool_format
from runtime.tools.parsers import StreamParser, parse

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
ASK = "What is the weather in Paris for 3 days?"

# Recorded shapes: a DeepSeek-R1 / Qwen3 reply with thinking, and a Qwen tool call after it.
THINKING = "<think>\nThe user greets me.\n</think>\n\nHello there!"
CALLING = (
    "<think>I need the weather.</think>\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
)


# --- pure conversion on recorded replies ---------------------------------------------------
def test_thinking_becomes_a_reasoning_item_a_thinking_block_and_ollamas_thinking():
    parsed = parse(THINKING, tool_format("none"))
    items = output_items(parsed, "completed", "msg_1")
    assert [i["type"] for i in items] == ["reasoning", "message"]
    assert items[0]["content"] == [{"type": "reasoning_text", "text": "The user greets me."}]
    assert items[1]["content"][0]["text"] == "Hello there!"
    blocks = content_blocks(parsed)
    assert [b["type"] for b in blocks] == ["thinking", "text"]
    assert (
        blocks[0]["thinking"].strip() == "The user greets me."
        and blocks[1]["text"] == "Hello there!"
    )
    fields = reply_fields(parsed)
    assert fields["thinking"].strip() == "The user greets me." and fields["text"] == "Hello there!"
    assert fields["tool_calls"] is None


def test_a_tool_call_after_thinking_is_a_function_call_item_tool_use_block_and_ollama_call():
    parsed = parse(CALLING, tool_format("qwen"))
    items = output_items(parsed, "completed")
    assert [i["type"] for i in items] == ["reasoning", "function_call"]
    assert items[1]["name"] == "get_weather" and items[1]["call_id"] == parsed.tool_calls[0].id
    assert json.loads(items[1]["arguments"]) == {"city": "Paris", "days": 3}
    blocks = content_blocks(parsed)
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"]
    assert blocks[1]["input"] == {"city": "Paris", "days": 3}
    fields = reply_fields(parsed)
    assert fields["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}
    ]


def _deltas(text: str, parser: str) -> list:
    stream = StreamParser(tool_format(parser))
    deltas = []
    for i in range(0, len(text), 3):  # 3-character pieces: markers split across chunks
        deltas += stream.feed(text[i : i + 3])
    return deltas + stream.finish()


def test_streamed_reply_opens_reasoning_then_function_call_items_in_responses_events():
    request = ResponsesRequest(model="m", input="x")
    output = ResponseEvents(request, response_id="resp_1", model="m")
    sent = output.begin(open_message=False)
    for delta in _deltas(CALLING, "qwen"):
        sent += output.feed(delta)
    sent += output.closing("stop", {})
    kinds = [name for name, _ in sent]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert sent[2][1]["item"]["type"] == "reasoning"
    assert "response.reasoning_text.delta" in kinds
    arguments = "".join(
        d["delta"] for n, d in sent if n == "response.function_call_arguments.delta"
    )
    done = next(d for n, d in sent if n == "response.function_call_arguments.done")
    assert json.loads(arguments) == {"city": "Paris", "days": 3} and done["arguments"] == arguments
    assert [d["sequence_number"] for _, d in sent] == list(range(len(sent)))
    final = sent[-1][1]["response"]["output"]
    assert [i["type"] for i in final] == ["reasoning", "function_call"]
    assert final[1]["arguments"] == arguments and final[1]["status"] == "completed"


def test_streamed_reply_becomes_thinking_then_tool_use_blocks_with_input_json_deltas():
    blocks = BlockStream()
    sent = blocks.begin(open_text=False)
    for delta in _deltas(CALLING, "qwen"):
        sent += blocks.feed(delta)
    sent += blocks.end()
    starts = [d["content_block"]["type"] for n, d in sent if n == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in sent
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == {"city": "Paris", "days": 3}
    assert [n for n, _ in sent].count("content_block_stop") == 2


# --- the real clients on the random-weight tiny model ---------------------------------------
def test_responses_required_tool_call_validates_and_streams_the_same_arguments(
    openai_client, service_model
):
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": WEATHER,
            "description": "Weather for a city",
        }
    ]
    kwargs = dict(
        model=service_model,
        input=ASK,
        tools=tools,
        tool_choice="required",
        temperature=0,
        max_output_tokens=200,
    )
    response = openai_client.responses.create(**kwargs)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    events = list(openai_client.responses.create(**kwargs, stream=True))
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[0].item.type == "function_call"
    streamed = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert streamed == done[0].arguments == calls[0].arguments
    final = events[-1].response
    assert final.output[-1].arguments == streamed

    # the next turn answers the call through previous_response_id (tools are sent again,
    # as OpenAI requires): its prompt holds the first exchange, the call and its output
    answered = openai_client.responses.create(
        model=service_model,
        previous_response_id=response.id,
        temperature=0,
        max_output_tokens=5,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    )
    assert answered.usage.input_tokens > response.usage.input_tokens


def test_responses_named_tool_choice_and_an_unanswered_call_id(openai_client, service_model):
    import openai

    tools = [
        {"type": "function", "name": "get_weather", "parameters": WEATHER},
        {"type": "function", "name": "other", "parameters": {"type": "object"}},
    ]
    response = openai_client.responses.create(
        model=service_model,
        input=ASK,
        tools=tools,
        temperature=0,
        max_output_tokens=200,
        tool_choice={"type": "function", "name": "get_weather"},
    )
    call = next(item for item in response.output if item.type == "function_call")
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    with pytest.raises(openai.BadRequestError):
        openai_client.responses.create(
            model=service_model,
            max_output_tokens=5,
            input=[{"type": "function_call_output", "call_id": "nope", "output": "x"}],
        )


@pytest.fixture(scope="module")
def anthropic_client(service):
    import anthropic

    return anthropic.Anthropic(base_url=service.base_url, api_key="unused", max_retries=0)


def test_anthropic_any_tool_choice_gives_tool_use_that_validates_and_streams_the_same(
    anthropic_client, service_model
):
    tools = [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}]
    kwargs = dict(
        model=service_model,
        max_tokens=200,
        extra_body={"temperature": 0},
        tools=tools,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": ASK}],
    )
    message = anthropic_client.messages.create(**kwargs)
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and uses[0].id
    jsonschema.validate(uses[0].input, WEATHER)
    with anthropic_client.messages.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partial = "".join(
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert json.loads(partial) == uses[0].input
    assert final.stop_reason == "tool_use"
    assert [b.input for b in final.content if b.type == "tool_use"] == [uses[0].input]

    # tool_use / tool_result blocks in the history
    follow = anthropic_client.messages.create(
        model=service_model,
        max_tokens=5,
        tools=tools,
        messages=[
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}],
            },
        ],
    )
    assert follow.usage.input_tokens > message.usage.input_tokens


def test_ollama_tools_forced_call_validates_and_streams_the_same(service, service_model):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    body = {
        "model": service_model,
        "messages": [{"role": "user", "content": ASK}],
        "tools": tools,
        "tool_choice": "required",
        "stream": False,
        "options": {"temperature": 0, "num_predict": 200},
    }
    whole = httpx.post(f"{service.base_url}/api/chat", json=body, timeout=120).json()
    calls = whole["message"]["tool_calls"]
    assert calls[0]["function"]["name"] == "get_weather"
    jsonschema.validate(calls[0]["function"]["arguments"], WEATHER)
    lines = httpx.post(f"{service.base_url}/api/chat", json={**body, "stream": True}, timeout=120)
    parsed = [json.loads(line) for line in lines.text.splitlines() if line]
    streamed = [c for line in parsed for c in line["message"].get("tool_calls") or []]
    assert streamed == calls and parsed[-1]["done"]


def test_ollama_client_sends_tools_and_tool_messages(service, service_model):
    import ollama

    client = ollama.Client(host=service.base_url)
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
        }
    ]
    ask = [{"role": "user", "content": ASK}]
    plain = client.chat(model=service_model, messages=ask, options={"num_predict": 3})
    with_tools = client.chat(
        model=service_model, messages=ask, tools=tools, options={"num_predict": 3}
    )
    assert with_tools.prompt_eval_count > plain.prompt_eval_count  # the template rendered them
    history = [
        *ask,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    answered = client.chat(
        model=service_model, messages=history, tools=tools, options={"num_predict": 3}
    )
    assert answered.done and answered.prompt_eval_count > with_tools.prompt_eval_count


# --- routing errors keep each API's shape -----------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "status", "shape"),
    [
        ("GET", "/api/chat", 405, "ollama"),
        ("POST", "/api/nope", 404, "ollama"),
        ("GET", "/api/tags/deeper", 404, "ollama"),
        ("GET", "/v1/messages", 405, "anthropic"),
        ("POST", "/v1/messages/nope", 404, "anthropic"),
        ("POST", "/v1/nope", 404, "openai"),
    ],
)
def test_unknown_paths_and_wrong_methods_answer_in_that_apis_shape(
    service, method, path, status, shape
):
    response = httpx.request(method, f"{service.base_url}{path}", json={}, timeout=30)
    assert response.status_code == status, response.text
    body = response.json()
    if shape == "ollama":
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    elif shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"]
    else:
        assert body["error"]["type"] == "not_found_error" and "code" in body["error"]
