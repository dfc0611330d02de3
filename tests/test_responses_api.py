"""OpenAI's Responses API on the same service: the real `openai` client, stored conversations."""

from __future__ import annotations

import json
import os
import time

import msgspec
import pytest

from runtime.errors import ResponseNotFound
from runtime.service.apis.responses.output import ResponseEvents
from runtime.service.apis.responses.store import ResponsesStore, StoredResponse
from runtime.service.apis.responses.wire import (
    ResponsesRequest,
    input_items,
    item_messages,
    to_turn,
)
from runtime.service.replies import Piece as Delta
from runtime.service.turn import new_id


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
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello"}],
                },
            ],
        }
    )
    assert item_messages(input_items(request)) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_text_format_json_schema_is_the_same_guidance_as_chats_response_format():
    from runtime.service.apis.openai.wire import ChatCompletionRequest

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = decode(
        {
            "model": "m",
            "input": "x",
            "max_output_tokens": 9,
            "temperature": 0,
            "text": {"format": {"type": "json_schema", "name": "t", "schema": schema}},
        }
    )
    chat = msgspec.json.decode(
        json.dumps(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "t", "schema": schema},
                },
            }
        ),
        type=ChatCompletionRequest,
    )
    turn = to_turn(request, [])
    assert turn.params.guidance == chat.to_generation_params().guidance
    assert (turn.max_tokens, turn.params.temperature) == (9, 0.0)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
        {"model": "m", "input": "x", "max_output_tokens": 0},
        {"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}},
    ],
    ids=["no-input", "output-without-output", "image-part", "zero-max-output", "unknown-format"],
)
def test_invalid_responses_bodies_do_not_decode(body):
    with pytest.raises(msgspec.ValidationError):
        decode(body)


def test_stream_events_come_in_order_with_increasing_sequence_numbers():
    output = ResponseEvents(decode({"model": "m", "input": "x"}), response_id="resp_1", model="m")
    sent = output.begin(open_message=True)
    sent += output.feed(Delta(content="He")) + output.feed(Delta(content="llo"))
    sent += output.closing("stop", {"input_tokens": 1, "output_tokens": 2})
    assert [name for name, _ in sent] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in sent] == list(range(len(sent)))
    final = sent[-1][1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"


# --- the store (no server) ----------------------------------------------------------------
def record(response_id: str | None = None, created_at: float | None = None) -> StoredResponse:
    return StoredResponse(
        id=response_id or new_id("resp_"),
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
    for response_id in (kept.id, new_id("resp_"), "../../etc/passwd", "resp_../x"):
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


# --- the real service, the real `openai` package ---------------------------------------------
HELLO = "Hello there"
N = 12


@pytest.fixture(scope="module")
def reference(openai_client, service_model):
    """What /v1/chat/completions says greedily to HELLO: the text every API must reproduce."""
    return openai_client.chat.completions.create(
        model=service_model,
        messages=[{"role": "user", "content": HELLO}],
        max_tokens=N,
        temperature=0,
    )


def greedy(openai_client, service_model, **kwargs):
    return openai_client.responses.create(
        model=service_model, max_output_tokens=N, temperature=0, **{"input": HELLO, **kwargs}
    )


def test_responses_give_the_same_greedy_text_and_usage_as_chat_completions(
    openai_client, reference, service_model
):
    response = greedy(openai_client, service_model)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text == reference.choices[0].message.content
    assert response.status == "incomplete"  # max_output_tokens ended it
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.input_tokens == reference.usage.prompt_tokens
    assert response.usage.output_tokens == reference.usage.completion_tokens == N
    assert response.usage.total_tokens == response.usage.input_tokens + N


def test_streamed_responses_send_the_event_sequence_with_increasing_numbers(
    openai_client, reference, service_model
):
    events = list(greedy(openai_client, service_model, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == events[-4].text == reference.choices[0].message.content
    final = events[-1].response
    assert final.output_text == text
    assert final.usage.input_tokens == reference.usage.prompt_tokens
    assert final.usage.output_tokens == N


def test_the_stream_helper_gives_the_final_response(openai_client, reference, service_model):
    with openai_client.responses.stream(
        model=service_model, input=HELLO, max_output_tokens=N, temperature=0
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == reference.choices[0].message.content


def test_instructions_and_message_items_are_the_chat_system_and_user_messages(
    openai_client, service_model
):
    system = "You answer in one word."
    expected = openai_client.chat.completions.create(
        model=service_model,
        max_tokens=N,
        temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": HELLO}],
    )
    by_instructions = greedy(openai_client, service_model, instructions=system)
    by_items = greedy(
        openai_client,
        service_model,
        input=[
            {"role": "developer", "content": system},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": HELLO}]},
        ],
    )
    assert (
        by_instructions.output_text == by_items.output_text == expected.choices[0].message.content
    )
    assert by_instructions.usage.input_tokens == expected.usage.prompt_tokens


def test_previous_response_id_continues_the_conversation(openai_client, service_model):
    first = greedy(openai_client, service_model)
    second = greedy(openai_client, service_model, input="And then?", previous_response_id=first.id)
    expected = openai_client.chat.completions.create(
        model=service_model,
        max_tokens=N,
        temperature=0,
        messages=[
            {"role": "user", "content": HELLO},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And then?"},
        ],
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens == expected.usage.prompt_tokens > first.usage.input_tokens
    assert second.output_text == expected.choices[0].message.content
    third = greedy(openai_client, service_model, input="Go on.", previous_response_id=second.id)
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens


def test_stored_responses_can_be_retrieved_listed_and_deleted(openai_client, service_model):
    import openai

    first = greedy(openai_client, service_model)
    second = greedy(
        openai_client,
        service_model,
        input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        previous_response_id=first.id,
    )
    fetched = openai_client.responses.retrieve(second.id)
    assert fetched.id == second.id and fetched.output_text == second.output_text
    items = list(openai_client.responses.input_items.list(second.id))
    assert [item.content[0].text for item in items] == ["two", "one"]  # newest first, as OpenAI
    ascending = openai_client.responses.input_items.list(second.id, order="asc", limit=1)
    assert [item.content[0].text for item in ascending.data] == ["one"] and ascending.has_more
    openai_client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.delete(second.id)


def test_store_false_keeps_nothing(openai_client, service_model):
    import openai

    unstored = greedy(openai_client, service_model, store=False)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        greedy(openai_client, service_model, previous_response_id=unstored.id)


def test_json_schema_text_format_constrains_the_reply(openai_client, service_model):
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    response = openai_client.responses.create(
        model=service_model,
        input="Is it ok?",
        max_output_tokens=64,
        temperature=0,
        text={
            "format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
        },
    )
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)


def test_unknown_model_and_unknown_previous_response_are_404_in_openai_shape(
    openai_client, service_model
):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.responses.create(model="no-such-model", input=HELLO)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as caught:
        greedy(openai_client, service_model, previous_response_id=new_id("resp_"))
    assert caught.value.body["code"] == "response_not_found"


BAD_BODIES = [
    b"{not json",
    {"model": "MODEL"},
    {"model": "MODEL", "input": 5},
    {"model": "MODEL", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
    {
        "model": "MODEL",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}],
    },
    {"model": "MODEL", "input": [{"role": "tool", "content": "x"}]},
    {"model": "MODEL", "input": "x", "max_output_tokens": 0},
    {"model": "MODEL", "input": "x", "temperature": -1},
    {"model": "MODEL", "input": "x", "text": {"format": {"type": "json_schema", "name": "x"}}},
    {
        "model": "MODEL",
        "input": "x",
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "objekt"}}},
    },
    {"model": "MODEL", "input": "x", "previous_response_id": "../../etc/passwd"},
    {"model": "../../etc/passwd", "input": "x"},
]
BAD_IDS = [
    "not-json",
    "no-input",
    "input-number",
    "function-call-output",
    "image-part",
    "tool-role",
    "zero-max-output",
    "negative-temperature",
    "schema-missing",
    "schema-guidance-cannot-compile",
    "path-like-previous-id",
    "path-like-model",
]
BAD_STATUS = {"path-like-previous-id": 404}


@pytest.mark.parametrize("body", BAD_BODIES, ids=BAD_IDS)
def test_invalid_bodies_are_4xx_in_openai_shape(service, service_model, body, request):
    import httpx

    url = f"{service.base_url}/v1/responses"
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, timeout=60)
    else:
        response = httpx.post(
            url, json=json.loads(json.dumps(body).replace("MODEL", service_model)), timeout=60
        )
    expected = BAD_STATUS.get(request.node.callspec.id, 400)
    assert response.status_code == expected, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] in ("invalid_request_error", "not_found_error")


def test_a_schema_guidance_cannot_compile_is_a_400_on_chat_completions_too(
    openai_client, service_model
):
    """The session model prunes its LM head, so it generates on og.Generator, which compiles
    the grammar when it is created: that failure is the request's fault, not a 500."""
    import openai

    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            reply = openai_client.chat.completions.create(
                model=service_model,
                messages=[{"role": "user", "content": "x"}],
                response_format=bad,
                max_tokens=5,
                stream=stream,
            )
            list(reply) if stream else None
        assert caught.value.body["param"] == "response_format"


# --- stored responses outlive the service process ---------------------------------------------
@pytest.fixture(scope="module")
def private_home(tmp_path_factory, service_home, service_model):
    """A FOUNDRY_HOME of its own (the session's cache, hard-linked) for a service we restart."""
    import shutil

    from conftest import run_foundry

    home = tmp_path_factory.mktemp("responses-home")
    shutil.copytree(
        service_home / "cache",
        home / "cache",
        copy_function=os.link,
        ignore=shutil.ignore_patterns("tmp", "locks"),
    )
    yield home
    run_foundry("service", "stop", home=home)


def test_previous_response_id_survives_a_service_restart(private_home, service_model):
    import openai
    from conftest import RunningService, run_foundry

    def client() -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{RunningService(private_home).base_url}/v1", api_key="unused", max_retries=0
        )

    assert run_foundry("service", "start", home=private_home).returncode == 0
    first = client().responses.create(
        model=service_model, input=HELLO, max_output_tokens=N, temperature=0
    )
    restarted = run_foundry("service", "restart", home=private_home)
    assert restarted.returncode == 0, restarted.stderr
    assert client().responses.retrieve(first.id).output_text == first.output_text
    second = client().responses.create(
        model=service_model,
        input="And then?",
        max_output_tokens=N,
        temperature=0,
        previous_response_id=first.id,
    )
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert list((private_home / "responses").glob(f"{first.id}.json"))
