"""OpenAI's Responses API on the same service: the real `openai` client, stored conversations."""

from __future__ import annotations

import json
import os
import time

import msgspec
import pytest

from runtime.errors import ResponseNotFound
from runtime.service.responses_protocol import (
    ResponseEvents,
    ResponsesRequest,
    input_items,
    item_messages,
    new_response_id,
    to_params,
)
from runtime.service.responses_store import ResponsesStore, StoredResponse


def decode(body: dict) -> ResponsesRequest:
    return msgspec.json.decode(json.dumps(body), type=ResponsesRequest)


# --- pure conversion (no server) ----------------------------------------------------------
def test_string_input_is_one_user_message():
    items = input_items(decode({"model": "m", "input": "Hi"}))
    assert [(i["role"], i["content"][0]) for i in items] == [
        ("user", {"type": "input_text", "text": "Hi"})
    ]
    assert item_messages(items) == [{"role": "user", "content": "Hi"}]


def test_message_items_keep_roles_and_developer_reads_as_system():
    request = decode(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hello"}]},
            ],
        }
    )
    assert item_messages(input_items(request)) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_text_format_json_schema_goes_to_guidance():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = decode(
        {"model": "m", "input": "x", "max_output_tokens": 9, "temperature": 0,
         "text": {"format": {"type": "json_schema", "name": "t", "schema": schema}}}
    )
    assert to_params(request) == {
        "max_tokens": 9, "temperature": 0.0, "guidance": ("json_schema", json.dumps(schema))
    }


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
        {"model": "m", "input": "x", "max_output_tokens": 0},
        {"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}},
    ],
    ids=["no-input", "function-call-output", "image-part", "zero-max-output", "unknown-format"],
)
def test_invalid_responses_bodies_do_not_decode(body):
    with pytest.raises(msgspec.ValidationError):
        decode(body)


def test_stream_events_come_in_order_with_increasing_sequence_numbers():
    events = ResponseEvents(decode({"model": "m", "input": "x"}), response_id="resp_1", model="m")
    sent = [*events.opening(), events.delta("He"), events.delta("llo")]
    sent += events.closing("Hello", "stop", {"input_tokens": 1, "output_tokens": 2})
    assert [name for name, _ in sent] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in sent] == list(range(len(sent)))
    final = sent[-1][1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"


# --- the store (no server) ----------------------------------------------------------------
def record(response_id: str | None = None, created_at: float | None = None) -> StoredResponse:
    return StoredResponse(
        id=response_id or new_response_id(),
        created_at=time.time() if created_at is None else created_at,
        response={"object": "response"},
        input_items=[],
        conversation=[{"role": "user", "content": "hi"}],
    )


def test_stored_response_survives_a_new_store_instance(tmp_path):
    kept = record()
    ResponsesStore(tmp_path).put(kept)
    assert ResponsesStore(tmp_path).get(kept.id) == kept
    assert not list((tmp_path / ".tmp").iterdir())


def test_deleted_and_unknown_and_path_like_ids_are_not_found(tmp_path):
    store = ResponsesStore(tmp_path)
    kept = record()
    store.put(kept)
    store.delete(kept.id)
    for response_id in (kept.id, new_response_id(), "../../etc/passwd", "resp_../x"):
        with pytest.raises(ResponseNotFound):
            store.get(response_id)
    with pytest.raises(ResponseNotFound):
        store.delete(kept.id)


def test_store_keeps_at_most_max_count_and_drops_expired(tmp_path):
    store = ResponsesStore(tmp_path, max_count=3, max_age=3600)
    ids = []
    for n in range(5):
        item = record()
        store.put(item)
        os.utime(tmp_path / f"{item.id}.json", (1000 + n, time.time() - 100 + n))
        ids.append(item.id)
    store.prune()
    assert sorted(p.stem for p in tmp_path.glob("resp_*.json")) == sorted(ids[-3:])
    os.utime(tmp_path / f"{ids[-1]}.json", (0, time.time() - 7200))
    store.prune()
    assert sorted(p.stem for p in tmp_path.glob("resp_*.json")) == sorted(ids[-3:-1])
    old = record(created_at=time.time() - 7200)
    store.put(old)
    with pytest.raises(ResponseNotFound):
        store.get(old.id)
