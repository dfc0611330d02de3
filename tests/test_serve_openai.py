"""The OpenAI API of the real service, driven by the real `openai` client (sync and async).

The session service (`foundry service start`, conftest) serves `tiny-qwen`, a random-weight
Qwen2.5-shaped model built by foundry-build at cpu-fp32. A second service started with
`serve(ServiceSettings(queue_size=1))` shows the 429 path.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
LONG = {"ignore_eos": True}  # vLLM extension: generate exactly max_tokens


def _async_client(service) -> openai.AsyncOpenAI:
    """Made inside each event loop (no async test plugin: tests call asyncio.run)."""
    return openai.AsyncOpenAI(base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0)


def _greedy(client, model, max_tokens=24, **extra):
    return client.chat.completions.create(
        model=model,
        messages=HELLO,
        max_tokens=max_tokens,
        temperature=0,
        extra_body={**LONG, **extra},
    )


def _streamed_text(client, model, **kwargs) -> tuple[str, list]:
    chunks = list(
        client.chat.completions.create(model=model, messages=HELLO, stream=True, **kwargs)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# --- models -----------------------------------------------------------------------------
def test_models_list_shows_the_cached_model(openai_client, service_model):
    ids = [m.id for m in openai_client.models.list().data]
    assert service_model in ids
    assert openai_client.models.retrieve(service_model).id == service_model


def test_unknown_model_is_404_in_openai_shape_listing_available_models(service, service_model):
    r = httpx.post(
        f"{service.base_url}/v1/chat/completions",
        json={"model": "no-such-model", "messages": HELLO},
    )
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["type"] == "not_found_error" and error["code"] == "model_not_found"
    assert service_model in error["message"]
    assert httpx.get(f"{service.base_url}/v1/models/no-such-model").status_code == 404


# --- chat completions -----------------------------------------------------------------------
def test_streaming_equals_non_streaming_for_greedy(openai_client, service_model):
    full = _greedy(openai_client, service_model)
    text, chunks = _streamed_text(
        openai_client, service_model, max_tokens=24, temperature=0, extra_body=LONG
    )
    assert full.choices[0].finish_reason == "length"
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_usage_counts_prompt_and_max_tokens(openai_client, service_model):
    reply = _greedy(openai_client, service_model, max_tokens=9)
    usage = reply.usage
    assert usage.completion_tokens == 9
    assert usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + 9
    assert reply.choices[0].finish_reason == "length"


def test_stream_include_usage_sends_a_final_usage_chunk(openai_client, service_model):
    _, chunks = _streamed_text(
        openai_client,
        service_model,
        max_tokens=7,
        temperature=0,
        extra_body=LONG,
        stream_options={"include_usage": True},
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_sequence_ends_the_reply_before_it_and_never_leaks(openai_client, service_model):
    text = _greedy(openai_client, service_model, max_tokens=40).choices[0].message.content
    stop = next(
        text[i : i + 3]
        for i in range(6, len(text) - 3)
        if text[i : i + 3].strip() == text[i : i + 3]
    )
    expected = text[: text.index(stop)]
    reply = _greedy(openai_client, service_model, max_tokens=40, stop=[stop])
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    streamed, chunks = _streamed_text(
        openai_client, service_model, max_tokens=40, temperature=0, stop=stop, extra_body=LONG
    )
    assert streamed == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_same_seed_gives_the_same_sampled_text(openai_client, service_model):
    def sample(seed):
        return openai_client.chat.completions.create(
            model=service_model,
            messages=HELLO,
            max_tokens=16,
            temperature=1.0,
            seed=seed,
            extra_body=LONG,
        )

    first, second = sample(1234), sample(1234)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.completion_tokens == 16


def test_n_2_returns_two_choices(openai_client, service_model):
    reply = openai_client.chat.completions.create(
        model=service_model, messages=HELLO, max_tokens=5, n=2, temperature=0, extra_body=LONG
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content == reply.choices[1].message.content
    assert reply.usage.completion_tokens == 10


def test_text_parts_content_is_the_same_as_a_string(openai_client, service_model):
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hello, how are you "},
                {"type": "text", "text": "today?"},
            ],
        }
    ]
    reply = openai_client.chat.completions.create(
        model=service_model, messages=parts, max_tokens=12, temperature=0, extra_body=LONG
    )
    assert (
        reply.choices[0].message.content
        == _greedy(openai_client, service_model, 12).choices[0].message.content
    )


def test_json_schema_response_format_returns_valid_json(openai_client, service_model):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 8},
            "days": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    reply = openai_client.chat.completions.create(
        model=service_model,
        messages=HELLO,
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_logprobs_is_refused_with_a_clear_400(openai_client, service_model):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=service_model, messages=HELLO, logprobs=True)
    assert "logprobs" in str(caught.value)


def test_async_client_streams_the_same_text(service, openai_client, service_model):
    expected = _greedy(openai_client, service_model, 16).choices[0].message.content

    async def stream_text() -> str:
        stream = await _async_client(service).chat.completions.create(
            model=service_model,
            messages=HELLO,
            max_tokens=16,
            temperature=0,
            stream=True,
            extra_body=LONG,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(stream_text()) == expected


def test_eight_concurrent_streams_all_complete_with_correct_usage(
    service, openai_client, service_model
):
    expected = _greedy(openai_client, service_model, 20).choices[0].message.content

    async def one(async_client: openai.AsyncOpenAI) -> tuple[str, int]:
        stream = await async_client.chat.completions.create(
            model=service_model,
            messages=HELLO,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=LONG,
        )
        text, usage = "", None
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        return text, usage.completion_tokens

    async def eight() -> list[tuple[str, int]]:
        client = _async_client(service)
        return list(await asyncio.gather(*(one(client) for _ in range(8))))

    assert asyncio.run(eight()) == [(expected, 20)] * 8


def _gauge(base_url: str, name: str) -> float:
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_client_disconnect_cancels_the_generation(service, openai_client, service_model):
    body = {
        "model": service_model,
        "messages": HELLO,
        "max_tokens": 5000,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{service.base_url}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        assert _gauge(service.base_url, "foundry_generating_requests") >= 1
    deadline = time.monotonic() + 20
    while _gauge(service.base_url, "foundry_generating_requests") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gauge(service.base_url, "foundry_generating_requests") == 0
    assert _greedy(openai_client, service_model, 4).usage.completion_tokens == 4


# --- completions --------------------------------------------------------------------------------
def test_completions_answers_a_prompt_and_a_list_of_prompts(openai_client, service_model):
    one = openai_client.completions.create(
        model=service_model, prompt="Hello", max_tokens=6, temperature=0, extra_body=LONG
    )
    assert one.object == "text_completion" and one.usage.completion_tokens == 6
    both = openai_client.completions.create(
        model=service_model, prompt=["Hello", "Hello"], max_tokens=6, temperature=0, extra_body=LONG
    )
    assert [c.text for c in both.choices] == [one.choices[0].text] * 2
    streamed = openai_client.completions.create(
        model=service_model,
        prompt="Hello",
        max_tokens=6,
        temperature=0,
        stream=True,
        extra_body=LONG,
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == one.choices[0].text


# --- bad input: a 4xx naming the field, never a 500 ---------------------------------------------
BAD_BODIES = [
    ({"messages": HELLO, "temperature": 3}, "temperature"),
    ({"messages": HELLO, "temperature": -1}, "temperature"),
    ({"messages": HELLO, "top_p": 0}, "top_p"),
    ({"messages": HELLO, "top_k": -5}, "top_k"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": -1}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": 10**12}, "max_tokens"),
    ({"messages": HELLO, "n": 9}, "n"),
    ({"messages": HELLO, "n": 0}, "n"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0].type",
    ),
    (
        {
            "messages": HELLO,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
        },
        "response_format",
    ),
    ({"messages": HELLO, "logprobs": True}, "logprobs"),
]


@pytest.mark.parametrize(
    ("body", "param"), BAD_BODIES, ids=[p + str(i) for i, (_, p) in enumerate(BAD_BODIES)]
)
def test_invalid_field_is_400_naming_it(service, service_model, body, param):
    r = httpx.post(f"{service.base_url}/v1/chat/completions", json={"model": service_model, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_invalid_json_is_400(service):
    r = httpx.post(
        f"{service.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_prompt_longer_than_the_context_is_400_before_streaming(service, service_model):
    huge = "hello " * 40_000
    r = httpx.post(
        f"{service.base_url}/v1/chat/completions",
        timeout=60,
        json={
            "model": service_model,
            "stream": True,
            "messages": [{"role": "user", "content": huge}],
        },
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_too_large_body_is_413(service, service_model):
    body = json.dumps(
        {"model": service_model, "messages": [{"role": "user", "content": "x" * (9 << 20)}]}
    )
    r = httpx.post(
        f"{service.base_url}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413
    assert "error" in r.json()


# --- a full queue ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_queue_service(service_home: Path, service_model: str):
    """A second service on the same store whose queue holds one waiting request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import uvicorn; from runtime.service.app import create_app; "
        "from runtime.service.settings import ServiceSettings; "
        f"uvicorn.run(create_app(ServiceSettings(port={port}, queue_size=1)), "
        f"host='127.0.0.1', port={port}, log_level='warning', lifespan='on')"
    )
    env = {**os.environ, "FOUNDRY_HOME": str(service_home)}
    env.pop("FOUNDRY_API_KEY", None)
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=service_home)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_full_queue_answers_429_with_retry_after(small_queue_service, service_model):
    """8 generate, 1 waits (queue_size=1), the rest are refused; streams stay open till the end."""
    body = {
        "model": service_model,
        "messages": HELLO,
        "max_tokens": 20000,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    statuses: list[int] = []
    refusals: list[httpx.Response] = []

    async def one(client: httpx.AsyncClient, release: asyncio.Event) -> None:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            statuses.append(response.status_code)
            if response.status_code == 429:
                await response.aread()
                refusals.append(response)
            else:
                await release.wait()  # leaving the block disconnects, which cancels the generation

    async def flood() -> None:
        release = asyncio.Event()
        async with httpx.AsyncClient(base_url=small_queue_service, timeout=120) as client:
            await client.post(
                "/v1/chat/completions", json={**body, "max_tokens": 1, "stream": False}
            )
            tasks = [asyncio.create_task(one(client, release)) for _ in range(12)]
            deadline = time.monotonic() + 60
            while (
                len(statuses) < 11 and time.monotonic() < deadline
            ):  # the queued one answers later
                await asyncio.sleep(0.05)
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(flood())
    assert sorted(statuses) == [200] * 9 + [429] * 3
    assert refusals[0].headers["Retry-After"] == "1"
    assert refusals[0].json()["error"]["type"] == "rate_limit_error"
