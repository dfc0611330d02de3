"""Anthropic's Messages API on the same service: the real `anthropic` client, same greedy text."""

from __future__ import annotations

import json

import msgspec
import pytest

from runtime.service.anthropic_protocol import (
    MessagesRequest,
    anthropic_error_body,
    stop_reason,
    to_chat,
)


# --- pure conversion (no server) ----------------------------------------------------------
def test_system_blocks_and_text_blocks_become_plain_chat_messages():
    request = msgspec.json.decode(
        json.dumps(
            {
                "model": "m",
                "max_tokens": 5,
                "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "More"},
                ],
                "stop_sequences": ["\n\n"],
                "top_k": 3,
            }
        ),
        type=MessagesRequest,
    )
    messages, params = to_chat(request)
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "More"},
    ]
    assert params == {"max_tokens": 5, "stop": ["\n\n"], "top_k": 3}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
        {"model": "m", "max_tokens": 4, "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "max_tokens": 4, "messages": []},
        {"model": "m", "max_tokens": 4, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
    ],
    ids=["missing-max-tokens", "zero-max-tokens", "image-block", "bad-role", "no-messages", "temperature>1"],
)
def test_invalid_messages_bodies_do_not_decode(body):
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body), type=MessagesRequest)


def test_stop_reason_names_what_ended_the_reply():
    assert stop_reason("length", None) == "max_tokens"
    assert stop_reason("stop", None) == "end_turn"
    assert stop_reason("stop", "\n") == "stop_sequence"


def test_error_body_has_anthropics_shape():
    assert anthropic_error_body(404, "no such model") == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    assert anthropic_error_body(500, "x")["error"]["type"] == "api_error"
