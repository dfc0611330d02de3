"""Concurrent chat requests share one continuous batch (runtime/engines/batch.py, issue 13).

What a user sees: each request's greedy text is what it would be alone (a batch of 8 with
different prompt lengths), a short request finishes while a long one runs, closing one stream
leaves the others untouched, and a request past the KV budget is a 429 with Retry-After.
Also inside the batch: a seed gives one text whatever runs beside it, a grammar holds per row,
a long guided prefill leaves the event loop free, and unloading cancels every sequence.
The batch drives every chat artifact the compiler builds (og.Generator is the one fallback).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from runtime.engines.base import GenerationParams
from runtime.errors import KvBudgetFull
from tests.test_prefix_reuse import int4_artifact  # noqa: F401 (a fixture: the tiny int4 build)

ALIAS = "qwen2.5-0.5b"
GREEDY = GenerationParams(max_tokens=12, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def artifact(genai_artifact):
    return genai_artifact(ALIAS)


def batched_engine(artifact, **env: str):
    from runtime.engines.chat import ChatEngine
    from runtime.store.metadata import ModelMetadata

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOUNDRY_PREFIX_CACHE_MB", "0")
        for name, value in env.items():
            patch.setenv(name, value)
        return ChatEngine(
            artifact,
            ModelMetadata(),
            model_id="tiny-batch",
            queue_size=8,
            max_batch=8,
        )


@pytest.fixture(scope="module")
def engine(artifact):
    chat = batched_engine(artifact)
    yield chat
    chat.close()


def og_greedy(artifact, prompt: list[int], tokens: int) -> list[int]:
    """Today's single-request output: one og.Generator, greedy, fixed length."""
    import onnxruntime_genai as og

    model = og.Model(str(artifact))
    params = og.GeneratorParams(model)
    total = len(prompt) + tokens
    params.set_search_options(do_sample=False, max_length=total, min_length=total)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    out = []
    for _ in range(tokens):
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def prompts(engine, count: int) -> list[list[int]]:
    """Chats of 3 to ~150 words: prompts both shorter and longer than one prefill chunk."""
    return [
        engine.encode(
            engine.render_prompt([{"role": "user", "content": " ".join(["tour"] * (3 + 21 * i))}])
        )
        for i in range(count)
    ]


async def ids_of(engine, prompt: list[int], params: GenerationParams = GREEDY) -> list[int]:
    return [i async for chunk in engine.stream(prompt, params) for i in chunk.token_ids]


def test_a_batch_of_eight_prompts_gives_each_its_greedy_tokens_alone(engine, artifact):
    chats = prompts(engine, 8)
    expected = [og_greedy(artifact, prompt, GREEDY.max_tokens) for prompt in chats]

    async def together() -> list[list[int]]:
        return await asyncio.gather(*(ids_of(engine, prompt) for prompt in chats))

    assert asyncio.run(together()) == expected
    assert asyncio.run(ids_of(engine, chats[5])) == expected[5]  # and alone in the batch


def test_a_short_request_finishes_while_a_long_one_runs(engine):
    long_prompt, short_prompt = prompts(engine, 2)
    finished: list[str] = []

    async def run(name: str, prompt: list[int], tokens: int) -> None:
        params = GenerationParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        async for chunk in engine.stream(prompt, params):
            if chunk.token_ids and name == "long" and chunk.completion_tokens == 1:
                started.set()
        finished.append(name)

    async def both() -> None:
        long_run = asyncio.create_task(run("long", long_prompt, 400))
        await started.wait()
        await run("short", short_prompt, 4)
        await long_run

    started = asyncio.Event()
    asyncio.run(both())
    assert finished == ["short", "long"]


def test_closing_one_stream_leaves_the_others_their_tokens(engine, artifact):
    chats = prompts(engine, 3)
    expected = [og_greedy(artifact, prompt, GREEDY.max_tokens) for prompt in chats]

    async def closed_after_two(prompt: list[int]) -> list[int]:
        stream = engine.stream(prompt, GenerationParams(max_tokens=400, temperature=0))
        got = []
        async for chunk in stream:
            got += chunk.token_ids
            if len(got) >= 2:
                await stream.aclose()
                break
        return got

    async def run() -> list:
        return await asyncio.gather(
            ids_of(engine, chats[0]), closed_after_two(chats[1]), ids_of(engine, chats[2])
        )

    first, cancelled, third = asyncio.run(run())
    assert (first, third) == (expected[0], expected[2])
    assert len(cancelled) == 2
    # The scheduler thread drops the closed row at its next step, which may come after the other
    # two streams have ended: wait for it (bounded) instead of reading the count at once.
    deadline = time.monotonic() + 30
    while engine.active_requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.active_requests() == 0


def test_stop_strings_and_min_tokens_hold_in_the_batch(engine):
    chat = prompts(engine, 1)[0]

    async def run() -> tuple[str, str, int]:
        full, cut, short = await asyncio.gather(
            collect(chat, GenerationParams(max_tokens=30, temperature=0, ignore_eos=True)),
            collect(chat, GenerationParams(max_tokens=30, temperature=0, stop=["\x00"])),
            collect(chat, GenerationParams(max_tokens=20, min_tokens=20, temperature=0)),
        )
        return full[0], cut[0], short[1]

    async def collect(prompt: list[int], params: GenerationParams) -> tuple[str, int]:
        chunks = [chunk async for chunk in engine.stream(prompt, params)]
        return "".join(c.text for c in chunks), chunks[-1].completion_tokens

    full, _, counted = asyncio.run(run())
    stop = full[8:11]

    async def stopped() -> str:
        params = GenerationParams(max_tokens=30, temperature=0, stop=[stop])
        other = asyncio.create_task(collect(chat, GREEDY))
        text = (await collect(chat, params))[0]
        await other
        return text

    assert asyncio.run(stopped()) == full[: full.index(stop)]
    assert counted == 20  # EOS masked until min_tokens


def eight_together_and_alone(artifact) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy tokens of 8 chats of different lengths decoded in one batch, and og.Generator's
    for each alone (a fresh batched engine, closed after)."""
    chat = batched_engine(artifact)
    try:
        chats = prompts(chat, 8)
        alone = [og_greedy(artifact, prompt, GREEDY.max_tokens) for prompt in chats]

        async def together() -> list[list[int]]:
            return await asyncio.gather(*(ids_of(chat, prompt) for prompt in chats))

        return asyncio.run(together()), alone
    finally:
        chat.close()


def test_int4_a_batch_of_eight_also_gives_each_its_greedy_tokens_alone(int4_artifact):  # noqa: F811
    """MatMulNBits (int4) rows in one decode step give a lone row's logits (onnxruntime 1.32)."""
    together, alone = eight_together_and_alone(int4_artifact)
    assert together == alone


def test_a_seed_gives_one_text_alone_and_in_a_batch(engine):
    chats = prompts(engine, 4)
    seeded = GenerationParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True)
    alone = asyncio.run(ids_of(engine, chats[2], seeded))

    async def beside_others() -> list[list[int]]:
        return await asyncio.gather(
            *(ids_of(engine, p, seeded if i == 2 else GREEDY) for i, p in enumerate(chats))
        )

    assert asyncio.run(beside_others())[2] == alone
    other_seed = GenerationParams(max_tokens=12, temperature=1.0, seed=8, ignore_eos=True)
    assert asyncio.run(ids_of(engine, chats[2], other_seed)) != alone


def test_each_row_of_a_batch_follows_its_own_grammar(engine):
    chats = prompts(engine, 3)
    yes_no = GenerationParams(max_tokens=20, temperature=0, guidance=("regex", "(yes|no)"))
    number = GenerationParams(max_tokens=20, temperature=0, guidance=("regex", "[0-9]{3}"))

    async def text(prompt: list[int], params: GenerationParams) -> tuple[str, str | None]:
        chunks = [chunk async for chunk in engine.stream(prompt, params)]
        return "".join(c.text for c in chunks), chunks[-1].finish_reason

    async def run() -> list[tuple[str, str | None]]:
        return await asyncio.gather(
            text(chats[0], yes_no), text(chats[1], GREEDY), text(chats[2], number)
        )

    answer, plain, digits = asyncio.run(run())
    assert answer[0] in ("yes", "no") and answer[1] == "stop"
    assert len(digits[0]) == 3 and digits[0].isdigit() and digits[1] == "stop"
    assert plain[1] == "length"  # the unguided row beside them is untouched


def test_a_grammar_llguidance_refuses_is_an_invalid_request_at_submit(engine):
    from runtime.errors import InvalidRequest

    async def submit() -> None:
        engine.stream(prompts(engine, 1)[0], GenerationParams(guidance=("regex", "((")))

    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(submit())
    assert refused.value.http_status == 400


def test_a_long_guided_prefill_leaves_the_event_loop_responsive(engine):
    """Issue 12 item 6: /health waited 17.8 s behind a 2.7k-token guided prefill on og."""
    words = " ".join(f"word{i}" for i in range(1400))
    prompt = engine.encode(engine.render_prompt([{"role": "user", "content": words}]))
    assert len(prompt) > 2000
    guided = GenerationParams(max_tokens=4, temperature=0, guidance=("regex", "[a-z]{1,4}"))

    async def worst_lag(work) -> tuple[float, object]:
        """The longest this loop waited past a 5 ms sleep while `work` ran."""
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:  # what /health waits for: this loop's turn
            while not done.is_set():
                start = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - start - 0.005)

        tick = asyncio.create_task(ticker())
        result = await work
        done.set()
        await tick
        return max(lags), result

    async def run() -> tuple[float, float, int]:
        # The machine's own scheduling noise (2 shared cores, nice 19): the loop alone, 2 s.
        idle, _ = await worst_lag(asyncio.sleep(2))
        busy, ids = await worst_lag(ids_of(engine, prompt, guided))
        return idle, busy, len(ids)  # type: ignore[arg-type]

    idle, busy, produced = asyncio.run(run())
    assert produced >= 1
    assert busy < 0.1 + idle, f"the loop waited {busy:.3f}s in the prefill, {idle:.3f}s idle"


@pytest.mark.parametrize("batchable", [True, False], ids=["batch", "og-generator-fallback"])
def test_unloading_cancels_every_running_sequence_on_every_path(artifact, batchable, monkeypatch):
    """Issue 12 item 9: unload(force=true) closes the engine; nothing may run on after it.

    The fallback (one og.Generator per request) serves artifacts the batch cannot drive; none
    that the compiler builds is one, so the test takes it by saying this one is not batchable.
    """
    from runtime.engines import chat as chat_module
    from runtime.store.metadata import ModelMetadata

    if not batchable:
        monkeypatch.setattr(chat_module, "supports_batching", lambda artifact: False)
    chat = chat_module.ChatEngine(artifact, ModelMetadata(), model_id="tiny-unload", max_batch=4)
    assert (chat._scheduler is not None) is batchable
    prompt = prompts(chat, 1)[0]
    endless = GenerationParams(max_tokens=100000, temperature=0, ignore_eos=True)

    async def run() -> list[str | None]:
        streams = [chat.stream(prompt, endless) for _ in range(3)]
        for stream in streams:
            await stream.__anext__()  # each is generating
        closing = asyncio.create_task(asyncio.to_thread(chat.close))

        async def last_reason(stream) -> str | None:
            reason = None
            async for chunk in stream:
                reason = chunk.finish_reason or reason
            return reason

        reasons = await asyncio.wait_for(asyncio.gather(*map(last_reason, streams)), 60)
        await closing
        return reasons

    assert asyncio.run(run()) == ["cancelled"] * 3
    assert chat.active_requests() == 0


def test_past_the_kv_budget_a_request_is_refused_with_retry_after(artifact):
    from runtime.engines.prefix_cache import kv_bytes_per_token

    mib = 1024 * 1024
    budget = 300 * kv_bytes_per_token(artifact)  # room for one 200-token request, not two
    chat = batched_engine(artifact, FOUNDRY_KV_BUDGET_MB=str(budget / mib))
    try:
        prompt = prompts(chat, 1)[0]
        params = GenerationParams(max_tokens=200 - len(prompt), temperature=0, ignore_eos=True)

        async def two() -> None:
            first = chat.stream(prompt, params)
            with pytest.raises(KvBudgetFull) as refused:
                chat.stream(prompt, params)
            assert refused.value.http_status == 429 and refused.value.retry_after >= 1
            assert len([c async for c in first]) > 1  # the admitted one runs to its end
            assert len([c async for c in chat.stream(prompt, params)]) > 1  # then room again

        asyncio.run(two())
    finally:
        chat.close()


def test_through_the_api_a_request_past_the_kv_budget_is_a_429_with_retry_after(
    service_home, service_model, tmp_path
):
    """A service whose KV budget holds one long chat: of four sent at once, the others are refused
    in OpenAI's shape."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from runtime.service.settings import ServiceSettings, launch_environment

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = launch_environment(ServiceSettings(port=port))  # what `foundry service start` sends
    # Its own FOUNDRY_HOME (the launcher owns that home's state file, and removing it on exit
    # would leave the session's service unreachable by the CLI), over the session's cache.
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(service_home / "cache")
    env |= {"FOUNDRY_HOME": str(home), "FOUNDRY_PREFIX_CACHE_MB": "0"}
    env["FOUNDRY_KV_BUDGET_MB"] = "0.075"  # tiny-qwen: 256 bytes a token, so ~300 tokens
    env.pop("FOUNDRY_API_KEY", None)
    launcher = [sys.executable, "-m", "runtime.service.launcher"]
    process = subprocess.Popen(launcher, env=env, cwd=home)
    base_url = f"http://127.0.0.1:{port}"
    body = {
        "model": service_model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 200,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        httpx.get(f"{base_url}/openai/load/{service_model}", timeout=120).raise_for_status()

        async def four_at_once() -> list[httpx.Response]:
            # Sent together, so the admitted chat still holds its KV when the others arrive
            # (one after the other, the tiny model's 200 tokens could end before the second).
            async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
                chats = [client.post("/v1/chat/completions", json=body) for _ in range(4)]
                return list(await asyncio.gather(*chats))

        answers = asyncio.run(four_at_once())
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        refused = next(answer for answer in answers if answer.status_code == 429)
        rest = next(answer for answer in answers if answer.status_code == 200).text
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "kv_budget_full")
        assert "FOUNDRY_KV_BUDGET_MB" in error["message"]
        assert "data: [DONE]" in rest  # the admitted chat ran to its end
    finally:
        process.terminate()
        process.wait(timeout=30)
