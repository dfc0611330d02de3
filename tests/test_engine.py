"""The generation core without a server: text, wire->engine conversion, ChatEngine, ModelManager.

The engine tests use onnxruntime-genai's builder output with full logits, on the continuous
batch like every chat artifact; the service tests (test_serve_openai.py) cover foundry-build's
pruned-LM-head artifacts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from runtime.engines.base import GenerationParams
from runtime.engines.detokenize import IncrementalDecoder, StopMatcher
from runtime.engines.prompt import ChatTemplate
from runtime.errors import (
    ContextTooLong,
    InvalidMessages,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    UnsupportedParameter,
)
from runtime.service.apis.openai.wire import ChatCompletionRequest, CompletionRequest
from runtime.service.transport import decode_body
from tests.test_batching import og_greedy

ALIAS = "qwen2.5-0.5b"
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]


# --- pure parts -----------------------------------------------------------------------------
def test_stop_string_split_across_chunks_never_leaks():
    matcher = StopMatcher(["STOP"])
    out = [matcher.push(piece) for piece in ["hello S", "T", "O", "P world"]]
    assert "".join(out) == "hello "
    assert matcher.stopped
    assert out[:3] == ["hello ", "", ""]


def test_text_that_only_looked_like_a_stop_is_released():
    matcher = StopMatcher(["STOP"])
    assert matcher.push("a ST") == "a "
    assert matcher.push("ART") == "START"
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_earliest_of_several_stops_wins():
    matcher = StopMatcher(["world", "lo"])
    assert matcher.push("hello world") == "hel"


def test_split_multibyte_character_is_held_until_complete():
    data = "é!".encode()  # 2-byte character, then "!": one byte per "token"
    decoder = IncrementalDecoder(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    pieces = [decoder.push(b) for b in data]
    assert pieces == ["", "é", "!"]
    assert decoder.flush() == ""


def test_chat_template_renders_text_parts_and_refuses_through_raise_exception():
    template = ChatTemplate(
        "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}"
        "{% endif %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}",
        bos_token="<s>",
    )
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert template.render(parts) == "[user]ab[assistant]"
    with pytest.raises(InvalidMessages, match="no tools here"):
        template.render([{"role": "tool", "content": "x"}])


def test_chat_template_sandbox_refuses_attribute_escapes():
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception) as caught:
        template.render(HELLO)
    assert "unsafe" in str(caught.value) or "access" in str(caught.value)


def _chat(**fields) -> ChatCompletionRequest:
    return decode_body(
        json.dumps({"model": "m", "messages": HELLO, **fields}).encode(), ChatCompletionRequest
    )


def test_chat_request_converts_to_generation_params():
    params = _chat(
        max_completion_tokens=12,
        temperature=0,
        top_p=0.5,
        top_k=-1,
        seed=-3,
        stop="END",
        min_tokens=2,
        ignore_eos=True,
    ).to_generation_params()
    assert params == GenerationParams(
        max_tokens=12,
        min_tokens=2,
        temperature=0.0,
        top_p=0.5,
        top_k=0,
        seed=(-3) % 2**31,
        stop=["END"],
        ignore_eos=True,
        guidance=None,
    )


def test_json_schema_guidance_has_no_free_whitespace():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = _chat(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    ).to_generation_params()
    kind, grammar = params.guidance
    assert kind == "json_schema"
    grammar = json.loads(grammar)
    assert grammar["x-guidance"]["whitespace_flexible"] is False
    assert grammar["properties"]["a"]["type"] == "integer"


def test_logprobs_and_an_unknown_tool_choice_are_refused_by_name():
    with pytest.raises(UnsupportedParameter) as caught:
        _chat(logprobs=True).to_generation_params()
    assert caught.value.param == "logprobs"
    with pytest.raises(InvalidRequest) as caught:
        _chat(tool_choice="sometimes").to_generation_params()
    assert caught.value.param == "tool_choice"


def test_completion_request_defaults_to_16_tokens_and_takes_a_list_of_prompts():
    body = decode_body(b'{"model": "m", "prompt": ["a", "b"]}', CompletionRequest)
    assert body.prompts() == ["a", "b"]
    assert body.to_generation_params().max_tokens == 16


# --- ChatEngine on a real artifact (og.Engine path) ---------------------------------------------
@pytest.fixture(scope="module")
def artifact(genai_artifact) -> Path:
    return genai_artifact(ALIAS)


@pytest.fixture(scope="module")
def engine(artifact):
    from runtime.engines.chat import ChatEngine
    from runtime.store.metadata import ModelMetadata

    chat = ChatEngine(artifact, ModelMetadata(), model_id="tiny-engine", queue_size=0, max_batch=2)
    yield chat
    chat.close()


async def _run(engine, params: GenerationParams, prompt: list[int] | None = None):
    prompt = prompt or engine.encode(engine.render_prompt(HELLO))
    chunks = [chunk async for chunk in engine.stream(prompt, params)]
    return "".join(c.text for c in chunks), chunks


def test_engine_greedy_is_deterministic_and_counts_tokens(engine):
    text, chunks = asyncio.run(
        _run(engine, GenerationParams(max_tokens=12, temperature=0, ignore_eos=True))
    )
    again, _ = asyncio.run(
        _run(engine, GenerationParams(max_tokens=12, temperature=0, ignore_eos=True))
    )
    assert text == again
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 12
    assert sum(len(c.token_ids) for c in chunks) == 12


def test_a_full_logits_artifact_runs_on_the_batch_with_og_generators_tokens(engine, artifact):
    params = GenerationParams(max_tokens=12, temperature=0, ignore_eos=True)
    prompt = engine.encode(engine.render_prompt(HELLO))
    _, chunks = asyncio.run(_run(engine, params, prompt))
    assert engine._scheduler is not None and engine._model is None  # og never loads the weights
    assert [i for c in chunks for i in c.token_ids] == og_greedy(artifact, prompt, 12)


def test_a_prompt_prefilled_in_chunks_gives_the_tokens_of_one_prefill(artifact):
    from runtime.engines.chat import ChatEngine
    from runtime.engines.gil import PREFILL_CHUNK
    from runtime.store.metadata import ModelMetadata

    default = ChatEngine(
        artifact, ModelMetadata(), model_id="tiny-chunks", queue_size=0, max_batch=2
    )
    try:
        words = " ".join(f"word{i}" for i in range(3 * PREFILL_CHUNK))
        prompt = default.encode(default.render_prompt([{"role": "user", "content": words}]))
        assert len(prompt) > 2 * PREFILL_CHUNK
        params = GenerationParams(max_tokens=10, temperature=0, ignore_eos=True)
        _, chunks = asyncio.run(_run(default, params, prompt))
    finally:
        default.close()
    assert [i for c in chunks for i in c.token_ids] == og_greedy(artifact, prompt, 10)


def test_engine_stop_cuts_before_the_stop_text(engine):
    text, _ = asyncio.run(
        _run(engine, GenerationParams(max_tokens=30, temperature=0, ignore_eos=True))
    )
    stop = text[8:11]
    cut, chunks = asyncio.run(
        _run(engine, GenerationParams(max_tokens=30, temperature=0, stop=[stop]))
    )
    assert cut == text[: text.index(stop)]
    assert chunks[-1].finish_reason == "stop"


def test_engine_same_seed_same_sample(engine):
    params = GenerationParams(max_tokens=10, temperature=1.0, seed=42)
    assert asyncio.run(_run(engine, params))[0] == asyncio.run(_run(engine, params))[0]


def test_engine_refuses_a_prompt_longer_than_its_context(engine):
    async def submit():
        engine.stream([1] * engine.context_length, GenerationParams(max_tokens=1))

    with pytest.raises(ContextTooLong):
        asyncio.run(submit())


def test_engine_queue_full_is_refused_at_submit_and_aclose_cancels(engine):
    async def scenario() -> int:
        # The module's engine counts an earlier test's last sequence out on its step thread,
        # just after that sequence's final chunk: wait (bounded) until it is idle.
        for _ in range(200):
            if engine.active_requests() == 0:
                break
            await asyncio.sleep(0.05)
        prompt = engine.encode(engine.render_prompt(HELLO))
        params = GenerationParams(max_tokens=5000, temperature=0, ignore_eos=True)
        streams = [engine.stream(prompt, params) for _ in range(2)]  # max_batch=2, queue_size=0
        with pytest.raises(QueueFull):
            engine.stream(prompt, params)
        for stream in streams:
            await stream.__anext__()
            await stream.aclose()
        for _ in range(200):
            if engine.active_requests() == 0:
                break
            await asyncio.sleep(0.05)
        return engine.active_requests()

    assert asyncio.run(scenario()) == 0


# --- ModelManager -------------------------------------------------------------------------------
@pytest.fixture
def store_with_two(artifact, foundry_home):
    from runtime.store import Store
    from runtime.store.metadata import ModelMetadata

    store = Store()
    for model_id in ("tiny-a", "tiny-b"):
        store.register(
            artifact, model_id=model_id, metadata=ModelMetadata(task="chat", family="qwen2")
        )
    return store


def test_manager_loads_once_evicts_lru_and_unloads_idle(store_with_two):
    from runtime.manager import ModelManager

    async def scenario():
        manager = ModelManager(store_with_two, max_loaded=1, ttl=0.3)
        await manager.start()
        try:
            first, second = await asyncio.gather(manager.get("tiny-a"), manager.get("tiny-a"))
            assert first is second
            await manager.get("tiny-b", task="chat")
            assert [m.model_id for m in manager.loaded()] == ["tiny-b"]
            for _ in range(100):
                if not manager.loaded():
                    break
                await asyncio.sleep(0.05)
            assert manager.loaded() == []
            with pytest.raises(ModelNotFound, match="tiny-a"):
                await manager.get("nope")
        finally:
            await manager.close()

    asyncio.run(scenario())


def test_manager_refuses_a_chat_model_for_another_task(store_with_two):
    from runtime.errors import UnsupportedTask
    from runtime.manager import ModelManager

    async def scenario():
        manager = ModelManager(store_with_two)
        try:
            await manager.get("tiny-a", task="embeddings")
        finally:
            await manager.close()

    with pytest.raises(UnsupportedTask):
        asyncio.run(scenario())


def test_generation_params_round_trip_as_msgspec():
    params = GenerationParams(max_tokens=3, stop=["x"], guidance=("regex", "a+"))
    assert msgspec.convert(msgspec.to_builtins(params), type=GenerationParams) == params
