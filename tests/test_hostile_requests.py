"""Hostile requests on every API: each gets its API's own error shape and a 400, never a 500.

Rows come from a review and a first schemathesis run against the service: numbers that
overflowed the engine, stop lists without bounds, top_k above the vocabulary, JSON nested
deep enough to raise RecursionError, a past tool call without arguments, sampler fields the
engine does not have. Each row answered 500 (or was silently accepted) before its fix.
"""

from __future__ import annotations

import json

import httpx
import pytest

from runtime.service.turn import OPEN_ENDED_MAX_TOKENS, open_ended_max_tokens

M = "tiny-qwen"  # the session service's model: vocabulary 512, context 32768
HI = [{"role": "user", "content": "hi"}]


def nested_schema(levels: int) -> str:
    """A JSON schema `levels` objects deep, as text (json.dumps itself recurses)."""
    return '{"type": "object", "properties": {"a": ' * levels + '{"type": "string"}' + "}}" * levels


def deep_array_body(depth: int) -> str:
    return '{"model": "x", "messages": ' + "[" * depth + "]" * depth + "}"


def body(value: object) -> str:
    return json.dumps(value)


DEEP = nested_schema(400)
NO_ARGUMENTS = [
    *HI,
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "42"},
]
F_TOOL = [{"type": "function", "function": {"name": "f"}}]

# (id, path, raw JSON body, text the error message names)
ROWS: list[tuple[str, str, str, str]] = [
    (
        "ollama-seed-overflow",
        "/api/generate",
        body({"model": M, "prompt": "hi", "stream": False, "options": {"seed": 2**64}}),
        "$.options.seed",
    ),
    (
        "ollama-top-k-above-vocab",
        "/api/generate",
        body({"model": M, "prompt": "hi", "stream": False, "options": {"top_k": 53534}}),
        "vocabulary of 512",
    ),
    (
        "ollama-five-stops",
        "/api/chat",
        body({"model": M, "messages": HI, "stream": False, "options": {"stop": ["a"] * 5}}),
        "length <= 4",
    ),
    (
        "ollama-long-stop",
        "/api/chat",
        body({"model": M, "messages": HI, "stream": False, "options": {"stop": ["a" * 257]}}),
        "length <= 256",
    ),
    (
        "ollama-num-predict-overflow",
        "/api/generate",
        body({"model": M, "prompt": "hi", "options": {"num_predict": 2**40}}),
        "$.options.num_predict",
    ),
    (
        "ollama-keep-alive-nan",
        "/api/generate",
        body({"model": M, "prompt": "", "keep_alive": "nan"}),
        "keep_alive",
    ),
    (
        "ollama-repeat-penalty",
        "/api/chat",
        body({"model": M, "messages": HI, "stream": False, "options": {"repeat_penalty": 1.1}}),
        "options.repeat_penalty is not supported",
    ),
    (
        "ollama-presence-penalty",
        "/api/generate",
        body({"model": M, "prompt": "hi", "stream": False, "options": {"presence_penalty": 0.5}}),
        "options.presence_penalty is not supported",
    ),
    ("ollama-embed-3000-inputs", "/api/embed", body({"model": "x", "input": ["x"] * 3000}), "2048"),
    (
        "ollama-deep-format",
        "/api/chat",
        '{"model": "tiny-qwen", "stream": false, "messages": [{"role": "user", "content": "hi"}], '
        f'"format": {DEEP}}}',
        "nested deeper than 64",
    ),
    (
        "anthropic-top-k-overflow",
        "/v1/messages",
        body({"model": M, "max_tokens": 2, "messages": HI, "top_k": 2**40}),
        "$.top_k",
    ),
    (
        "anthropic-top-k-above-vocab",
        "/v1/messages",
        body({"model": M, "max_tokens": 2, "messages": HI, "top_k": 53534}),
        "vocabulary of 512",
    ),
    (
        "anthropic-five-stop-sequences",
        "/v1/messages",
        body({"model": M, "max_tokens": 2, "messages": HI, "stop_sequences": ["a"] * 5}),
        "$.stop_sequences",
    ),
    (
        "anthropic-max-tokens-overflow",
        "/v1/messages",
        body({"model": M, "max_tokens": 2**40, "messages": HI}),
        "$.max_tokens",
    ),
    (
        "openai-top-k-above-vocab",
        "/v1/chat/completions",
        body({"model": M, "max_tokens": 2, "messages": HI, "top_k": 53534}),
        "vocabulary of 512",
    ),
    (
        "openai-presence-penalty",
        "/v1/chat/completions",
        body({"model": M, "max_tokens": 2, "messages": HI, "presence_penalty": 1.0}),
        "presence_penalty",
    ),
    (
        "openai-frequency-penalty",
        "/v1/completions",
        body({"model": M, "max_tokens": 2, "prompt": "hi", "frequency_penalty": -1.0}),
        "frequency_penalty",
    ),
    (
        "openai-serial-tool-calls",
        "/v1/chat/completions",
        body({"model": M, "messages": HI, "tools": F_TOOL, "parallel_tool_calls": False}),
        "parallel_tool_calls",
    ),
    (
        "openai-deep-json-schema",
        "/v1/chat/completions",
        '{"model": "tiny-qwen", "messages": [{"role": "user", "content": "hi"}], '
        f'"response_format": {{"type": "json_schema", "json_schema": {{"name": "x", "schema": {DEEP}}}}}}}',
        "nested deeper than 64",
    ),
    (
        "openai-5000-deep-json-schema",  # the review's RecursionError case, at its own depth
        "/v1/chat/completions",
        '{"model": "tiny-qwen", "messages": [{"role": "user", "content": "hi"}], '
        f'"response_format": {{"type": "json_schema", "json_schema": {{"name": "x", "schema": {nested_schema(5000)}}}}}}}',
        "nested",
    ),
    (
        "openai-deep-tool-parameters",
        "/v1/chat/completions",
        '{"model": "tiny-qwen", "messages": [{"role": "user", "content": "hi"}], '
        f'"tools": [{{"type": "function", "function": {{"name": "f", "parameters": {DEEP}}}}}]}}',
        "nested deeper than 64",
    ),
    (
        "openai-tool-call-without-arguments",
        "/v1/chat/completions",
        body({"model": M, "max_tokens": 2, "messages": NO_ARGUMENTS}),
        "function.arguments",
    ),
    (
        "completions-prompts-times-n",
        "/v1/completions",
        body({"model": M, "max_tokens": 2, "prompt": ["a"] * 8, "n": 8}),
        "64 sequences",
    ),
    (
        "responses-max-output-tokens-overflow",
        "/v1/responses",
        body({"model": M, "input": "hi", "max_output_tokens": 2**40}),
        "$.max_output_tokens",
    ),
    ("responses-deep-body", "/v1/responses", deep_array_body(20_000), "nested too deeply"),
    ("embeddings-deep-body", "/v1/embeddings", deep_array_body(20_000), "not valid JSON"),
    ("download-deep-body", "/openai/download", deep_array_body(20_000), "not valid JSON"),
    ("pull-deep-body", "/api/pull", deep_array_body(20_000), "nested too deeply"),
]


def error_message(path: str, reply: httpx.Response) -> str:
    """The message in the API's own error shape (OpenAI, Anthropic or Ollama)."""
    error = reply.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str)
        return error
    if path.startswith("/v1/messages"):
        assert reply.json()["type"] == "error" and error["type"] == "invalid_request_error"
    return error["message"]


@pytest.mark.parametrize(("row_id", "path", "raw", "named"), ROWS, ids=[r[0] for r in ROWS])
def test_each_hostile_request_is_a_400_in_its_apis_shape(service, row_id, path, raw, named):
    reply = httpx.post(
        f"{service.base_url}{path}",
        content=raw.encode(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert reply.status_code == 400, reply.text[:300]
    assert named in error_message(path, reply)


def test_neutral_ollama_penalties_are_accepted(service):
    """Clients that always send the neutral values (repeat_penalty 1, the others 0) still work."""
    neutral = {"repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    options = {**neutral, "num_predict": 2, "temperature": 0}
    reply = httpx.post(
        f"{service.base_url}/api/chat",
        json={"model": M, "messages": HI, "stream": False, "options": options},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text[:300]


def test_the_service_still_answers_after_the_hostile_requests(service):
    assert httpx.get(f"{service.base_url}/health", timeout=10).status_code == 200
    reply = httpx.post(
        f"{service.base_url}/api/generate",
        json={"model": M, "prompt": "hi", "stream": False, "options": {"seed": -1}},
        timeout=60,
    )
    assert reply.status_code == 200  # Ollama's seed -1 (random) is accepted


def test_open_ended_apis_default_to_a_bounded_reply():
    """Responses without max_output_tokens and Ollama without num_predict: 4096 or the room left."""
    assert open_ended_max_tokens(None, 32_768) == OPEN_ENDED_MAX_TOKENS == 4096
    assert open_ended_max_tokens(None, 100) == 100
    assert open_ended_max_tokens(10_000, 32_768) == 10_000
    assert open_ended_max_tokens(10_000, 500) == 500


def silent_flac(hours: float) -> bytes:
    """FLAC of silence: ~180 KB for 2 hours, which decoded whole needed 1.1 GB (measured)."""
    import io

    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", samplerate=8000, channels=1, format="FLAC") as out:
        minute = np.zeros(8000 * 60, dtype=np.int16)
        for _ in range(int(hours * 60)):
            out.write(minute)
    return buffer.getvalue()


def test_an_audio_bomb_is_refused_from_its_header_before_decoding(service):
    bomb = silent_flac(2)
    assert len(bomb) < 1_000_000
    reply = httpx.post(
        f"{service.base_url}/v1/audio/transcriptions",
        files={"file": ("silence.flac", bomb, "audio/flac")},
        data={"model": M},
        timeout=60,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_audio"
    assert error["message"] == "the audio is 7,200 s long; at most 1,800 s are accepted"
