"""Ollama's API on the same service: the real `ollama` client, same greedy text as chat."""

from __future__ import annotations

import json
import math

import httpx
import msgspec
import pytest

from runtime.errors import InvalidRequest
from runtime.service.apis.ollama.wire import (
    ChatRequest,
    GenerateRequest,
    Options,
    parse_keep_alive,
    to_turn,
)
from runtime.service.apis.openai.wire import ChatCompletionRequest


# --- pure conversion (no server) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (300, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (-1, math.inf),
        ("-1m", math.inf),
    ],
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
                "options": {
                    "num_predict": 7,
                    "temperature": 0,
                    "top_k": 2,
                    "top_p": 0.5,
                    "seed": 3,
                    "stop": ["x"],
                    "num_ctx": 64,
                    "mirostat": 1,
                },
                "format": "json",
            }
        ),
        type=ChatRequest,
    )
    turn = to_turn(request)
    assert turn.messages == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert turn.max_tokens == 7
    assert turn.limit is not None and turn.limit.tokens == 64
    params = turn.params
    assert (params.temperature, params.top_k, params.top_p) == (0.0, 2, 0.5)
    assert (params.seed, params.stop) == (3, ["x"])
    guidance = params.guidance
    chat = msgspec.json.decode(
        json.dumps(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"},
            }
        ),
        type=ChatCompletionRequest,
    )
    assert guidance == chat.to_generation_params().guidance  # the same path as chat's
    assert request.stream is True  # Ollama streams unless told not to


def test_generate_is_a_one_turn_chat_and_unlimited_num_predict_sets_no_cap():
    request = GenerateRequest(model="m", prompt="p", system="s", options=Options(num_predict=-1))
    turn = to_turn(request)
    assert turn.messages == [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}]
    assert turn.max_tokens is None and turn.open_ended


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "options": {"temperature": -1}},
        {"model": "m", "options": {"num_ctx": 0}},
        {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
        {"messages": []},
    ],
    ids=["negative-temperature", "zero-num-ctx", "bad-role", "no-model"],
)
def test_invalid_chat_bodies_do_not_decode(body):
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body), type=ChatRequest)


# --- the real service, the real `ollama` package ---------------------------------------------
HELLO = [{"role": "user", "content": "Hello there"}]
N = 12  # tokens per reply: enough text to compare, cheap on two cores


@pytest.fixture(scope="module")
def client(service):
    import ollama

    return ollama.Client(host=service.base_url, timeout=120)


@pytest.fixture(scope="module")
def reference(openai_client, service_model):
    """What /v1/chat/completions says greedily to HELLO: the text every API must reproduce."""
    return openai_client.chat.completions.create(
        model=service_model, messages=HELLO, max_tokens=N, temperature=0
    )


def post(service, path: str, body: object):
    import httpx

    return httpx.post(f"{service.base_url}{path}", json=body, timeout=120)


GREEDY = {"num_predict": N, "temperature": 0}


def test_ollama_chat_gives_the_same_greedy_text_and_usage_as_chat_completions(
    client, reference, service_model
):
    reply = client.chat(model=service_model, messages=HELLO, options=GREEDY, stream=False)
    assert reply.message.role == "assistant"
    assert reply.message.content == reference.choices[0].message.content
    assert reply.done is True
    assert reply.done_reason == "length"
    assert reply.prompt_eval_count == reference.usage.prompt_tokens
    assert reply.eval_count == reference.usage.completion_tokens == N


def test_ollama_chat_streams_ndjson_that_adds_up_to_the_same_text(client, reference, service_model):
    parts = list(client.chat(model=service_model, messages=HELLO, options=GREEDY, stream=True))
    assert len(parts) > 2
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == reference.choices[0].message.content
    assert parts[-1].eval_count == reference.usage.completion_tokens
    assert parts[-1].prompt_eval_count == reference.usage.prompt_tokens


def test_ollama_streams_by_default_as_ndjson_lines(service, service_model):
    response = post(
        service, "/api/chat", {"model": service_model, "messages": HELLO, "options": GREEDY}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[-1]["done"] is True and all(not line["done"] for line in lines[:-1])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ollama_generate_answers_the_prompt_as_a_one_turn_chat(
    client, reference, service_model, stream
):
    result = client.generate(
        model=service_model, prompt=HELLO[0]["content"], options=GREEDY, stream=stream
    )
    parts = list(result) if stream else [result]
    assert "".join(p.response for p in parts) == reference.choices[0].message.content
    assert parts[-1].done and parts[-1].eval_count == N


def test_ollama_stop_option_ends_the_reply_before_the_stop_text(client, reference, service_model):
    text = reference.choices[0].message.content
    stop = next(text[i : i + 2] for i in range(3, len(text) - 2) if text[i : i + 2].strip())
    expected = text[: text.find(stop)]
    reply = client.chat(
        model=service_model, messages=HELLO, options={**GREEDY, "stop": [stop]}, stream=False
    )
    assert reply.message.content == expected
    assert reply.done_reason == "stop"
    streamed = client.chat(
        model=service_model, messages=HELLO, options={**GREEDY, "stop": [stop]}, stream=True
    )
    assert "".join(p.message.content for p in streamed) == expected


def test_ollama_list_show_and_version_describe_the_cached_model(client, service, service_model):
    names = [m.model for m in client.list().models]
    assert service_model in names
    shown = client.show(service_model)
    assert shown.details.family == "qwen2"
    assert "completion" in shown.capabilities
    assert "im_start" in shown.template
    version = post(service, "/api/version", {}) if False else None  # GET below
    import httpx

    version = httpx.get(f"{service.base_url}/api/version", timeout=30).json()
    assert version["version"].count(".") == 2


def test_ollama_keep_alive_zero_unloads_and_a_duration_sets_the_expiry(client, service_model):
    import datetime as dt

    client.chat(model=service_model, messages=HELLO, options=GREEDY, stream=False, keep_alive="5m")
    (entry,) = [m for m in client.ps().models if m.model == service_model]
    left = (entry.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 200 < left <= 300
    client.chat(model=service_model, messages=HELLO, options=GREEDY, stream=False, keep_alive=0)
    assert service_model not in [m.model for m in client.ps().models]
    streamed = client.chat(
        model=service_model, messages=HELLO, options=GREEDY, stream=True, keep_alive=0
    )
    assert list(streamed)[-1].done
    assert service_model not in [m.model for m in client.ps().models]
    loaded = client.generate(model=service_model, prompt="", keep_alive=-1)
    assert loaded.done_reason == "load"
    assert service_model in [m.model for m in client.ps().models]
    unloaded = client.generate(model=service_model, prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert service_model not in [m.model for m in client.ps().models]
    client.generate(model=service_model, prompt="", keep_alive="10m")  # leave it loaded for others


def test_format_schema_constrains_the_reply_through_chats_guidance(client, service_model):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    reply = client.chat(
        model=service_model,
        messages=HELLO,
        format=schema,
        stream=False,
        options={"num_predict": 64, "temperature": 0},
    )
    assert reply.done_reason == "stop"
    assert set(json.loads(reply.message.content)) == {"ok"}


def test_unknown_model_is_404_in_ollamas_shape(client, service):
    import ollama

    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=HELLO, stream=False)
    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.error
    response = post(service, "/api/show", {"model": "no-such-model"})
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_pull_of_a_cached_model_succeeds_and_of_an_unknown_one_is_404(
    client, service, service_model
):
    assert [p.status for p in client.pull(service_model, stream=True)][-1] == "success"
    assert client.pull(service_model).status == "success"
    response = post(service, "/api/pull", {"model": "no-such-model"})
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_delete_removes_a_model_from_the_list(client, service, service_model):
    import httpx

    from runtime.store import Store

    store = Store(service.home / "cache")
    original = store.resolve(service_model)
    store.register(original.path, model_id="tiny-copy", metadata=original.info)
    assert "tiny-copy" in [m.model for m in client.list().models]
    client.delete("tiny-copy")
    assert "tiny-copy" not in [m.model for m in client.list().models]
    again = httpx.request("DELETE", f"{service.base_url}/api/delete", json={"model": "tiny-copy"})
    assert again.status_code == 404 and set(again.json()) == {"error"}


BAD_BODIES = [
    ("/api/chat", b"{not json"),
    ("/api/chat", {"messages": HELLO}),
    ("/api/chat", {"model": "MODEL", "messages": [{"role": "robot", "content": "x"}]}),
    ("/api/chat", {"model": "MODEL", "messages": "hello"}),
    ("/api/chat", {"model": "MODEL", "messages": HELLO, "options": {"temperature": -1}}),
    ("/api/chat", {"model": "MODEL", "messages": HELLO, "options": {"num_ctx": 10**7}}),
    ("/api/chat", {"model": "MODEL", "messages": HELLO, "keep_alive": "soon"}),
    ("/api/chat", {"model": "MODEL", "messages": HELLO, "format": "yaml"}),
    ("/api/chat", {"model": "MODEL", "messages": HELLO, "format": {"type": "objekt"}}),
    ("/api/chat", {"model": "../../etc/passwd", "messages": HELLO}),
    ("/api/chat", {"model": "a/b", "messages": HELLO}),
    ("/api/generate", {"model": "MODEL", "prompt": "x", "options": {"num_predict": "many"}}),
    ("/api/generate", {"model": "MODEL", "prompt": "x", "raw": True}),
    ("/api/show", {"model": "..\\\\x"}),
    ("/api/pull", {"model": "../x"}),
    ("/api/embed", {"model": "MODEL"}),
]
BAD_IDS = [
    "not-json",
    "no-model",
    "bad-role",
    "messages-not-list",
    "negative-temperature",
    "num-ctx-above-context",
    "bad-keep-alive",
    "bad-format",
    "format-schema-cannot-compile",
    "path-traversal-name",
    "slash-in-name",
    "num-predict-not-int",
    "raw-prompt",
    "backslash-name",
    "pull-traversal",
    "embed-without-input",
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES, ids=BAD_IDS)
def test_invalid_bodies_are_400_in_ollamas_shape(service, service_model, path, body):
    import httpx

    if isinstance(body, bytes):
        response = httpx.post(f"{service.base_url}{path}", content=body, timeout=60)
    else:
        body = json.loads(json.dumps(body).replace("MODEL", service_model))
        response = post(service, path, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"error"} and isinstance(error["error"], str) and error["error"]


# --- embeddings (a tiny synthetic MiniLM built into the session store) ----------------------
@pytest.fixture(scope="module")
def embedding_model(service) -> str:
    import os
    import subprocess
    import sys
    from pathlib import Path

    build = subprocess.run(
        [
            str(Path(sys.executable).with_name("foundry-build")),
            "all-minilm-l6-v2",
            "--synthetic",
            "--layers",
            "2",
            "--hidden",
            "64",
            "--target",
            "cpu-fp32",
            "--as",
            "tiny-minilm",
        ],
        env={**os.environ, "FOUNDRY_HOME": str(service.home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return "tiny-minilm"


@pytest.mark.slow
def test_ollama_embed_and_embeddings_match_the_openai_embeddings_route(
    client, openai_client, embedding_model, service_model
):
    import ollama

    texts = ["The sky is blue.", "Grass is green."]
    expected = [
        d.embedding
        for d in openai_client.embeddings.create(model=embedding_model, input=texts).data
    ]
    embedded = client.embed(model=embedding_model, input=texts)
    assert len(embedded.embeddings) == 2
    for got, want in zip(embedded.embeddings, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    single = client.embeddings(model=embedding_model, prompt=texts[0])
    assert list(single.embedding) == pytest.approx(expected[0], abs=1e-6)
    assert embedded.prompt_eval_count > 0
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=service_model, input=texts)  # a chat model makes no embeddings
    assert caught.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=embedding_model, messages=HELLO, stream=False)
    assert caught.value.status_code == 400


@pytest.mark.slow
def test_ollama_load_duration_and_size_vram_are_what_was_measured(client, service, embedding_model):
    """/api/embed's load_duration was the constant 0 and /api/ps's size_vram too: now the load
    is timed (at least the manager's own load time after an unload), and a CPU model has no
    bytes in GPU memory."""
    assert httpx.post(f"{service.base_url}/openai/unload/{embedding_model}").status_code == 200
    embedded = client.embed(model=embedding_model, input=["The sky is blue."])
    rows = httpx.get(f"{service.base_url}/foundry/ps").json()["models"]
    (row,) = [r for r in rows if r["model"] == embedding_model]
    assert row["load_seconds"] > 0
    assert embedded.load_duration >= int(row["load_seconds"] * 1e9) * 0.99
    again = client.embed(model=embedding_model, input=["The sky is blue."])
    assert again.load_duration < embedded.load_duration  # resident now: no load
    (ps,) = [m for m in client.ps().models if m.model == embedding_model]
    assert ps.size_vram == 0 and ps.size > 0


# --- /api/pull: the catalog download, from a local hub -----------------------------------------
HUB_REPO, HUB_FOLDER = "test-org/hub-qwen-onnx", "cpu_and_mobile/cpu-fp32"
HUB_CATALOG = f"""\
schema: 1
models:
  - alias: hub-qwen
    name: hub-qwen
    display_name: Tiny Qwen on a local hub
    publisher: Test
    license: apache-2.0
    task: chat
    family: qwen2
    max_output_tokens: 64
    context_length: 512
    variants:
      - {{device: cpu, provider: cpu, precision: fp32, size: 3000000,
         artifact: {{repo: {HUB_REPO}, revision: main, subfolder: {HUB_FOLDER}}}}}
"""


@pytest.fixture(scope="module")
def hub_service(tmp_path_factory, service_home, service_model):
    """A service whose catalog has `hub-qwen`, served by a local hub (the session's tiny model)."""
    import ollama
    from conftest import RunningService, run_foundry

    from runtime.store import Store
    from tests.hub_server import HubServer, RemoteRepo

    home = tmp_path_factory.mktemp("pull-home")
    (home / "catalog").mkdir()
    (home / "catalog" / "hub.yaml").write_text(HUB_CATALOG)
    artifact = Store(service_home / "cache").resolve(service_model).path
    with HubServer() as hub:
        hub.add(RemoteRepo.from_folder(HUB_REPO, artifact, prefix=HUB_FOLDER))
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}
        started = run_foundry("service", "start", home=home, env=env)
        assert started.returncode == 0, started.stderr
        yield ollama.Client(host=RunningService(home).base_url, timeout=300)
        run_foundry("service", "stop", home=home)


def test_pull_downloads_a_catalog_model_with_ollama_style_progress(hub_service):
    lines = list(hub_service.pull("hub-qwen", stream=True))
    statuses = [line.status for line in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    # Only steps that happened: no canned "verifying sha256 digest" after the fact, and the
    # store's register events are not drawn as more download bars.
    assert "verifying sha256 digest" not in statuses
    validated = next(i for i, s in enumerate(statuses) if s.startswith("validate "))
    assert statuses.index("writing manifest") > validated
    assert not any(line.status.startswith("pulling genai_config") for line in lines)
    sized = [line for line in lines if line.total]
    assert sized and all(0 <= (line.completed or 0) <= line.total for line in sized)
    assert any(line.completed == line.total for line in sized)
    assert "hub-qwen-cpu-fp32:1" in [m.model for m in hub_service.list().models]
    reply = hub_service.chat(model="hub-qwen", messages=HELLO, options=GREEDY, stream=False)
    assert reply.eval_count == N
    assert hub_service.pull("hub-qwen").status == "success"  # cached now: nothing to fetch
