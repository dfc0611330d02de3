"""Ollama's API on the same service: the real `ollama` client, same greedy text as chat."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from runtime.errors import InvalidRequest
from runtime.service.ollama_protocol import (
    ChatRequest,
    GenerateRequest,
    Options,
    chat_to_chat,
    generate_to_chat,
    parse_keep_alive,
)


# --- pure conversion (no server) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (0, 0.0), ("0", 0.0), (300, 300.0), ("5m", 300.0), ("1h30m", 5400.0),
     ("250ms", 0.25), (-1, math.inf), ("-1m", math.inf)],
)
def test_keep_alive_reads_ollama_durations(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "m5", ""])
def test_unreadable_keep_alive_is_a_bad_request(value):
    with pytest.raises(InvalidRequest):
        parse_keep_alive(value)


def test_chat_options_become_generation_settings():
    request = msgspec.json.decode(
        json.dumps(
            {
                "model": "m",
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                "options": {"num_predict": 7, "temperature": 0, "top_k": 2, "top_p": 0.5,
                            "seed": 3, "stop": ["x"], "num_ctx": 64, "mirostat": 1},
                "format": "json",
            }
        ),
        type=ChatRequest,
    )
    messages, params = chat_to_chat(request)
    assert messages == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert params == {"max_tokens": 7, "temperature": 0.0, "top_k": 2, "top_p": 0.5, "seed": 3,
                      "stop": ["x"], "guidance": ("json_schema", '{"type": "object"}')}
    assert request.stream is True  # Ollama streams unless told not to


def test_generate_is_a_one_turn_chat_and_unlimited_num_predict_sets_no_cap():
    request = GenerateRequest(model="m", prompt="p", system="s", options=Options(num_predict=-1))
    messages, params = generate_to_chat(request)
    assert messages == [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}]
    assert "max_tokens" not in params


@pytest.mark.parametrize(
    "body",
    [{"model": "m", "options": {"temperature": -1}}, {"model": "m", "options": {"num_ctx": 0}},
     {"model": "m", "messages": [{"role": "robot", "content": "x"}]}, {"messages": []}],
    ids=["negative-temperature", "zero-num-ctx", "bad-role", "no-model"],
)
def test_invalid_chat_bodies_do_not_decode(body):
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body), type=ChatRequest)
