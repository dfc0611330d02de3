"""Prefix reuse across chat turns: same greedy tokens as a cold run, fewer tokens computed.

The reference for "cold" is a fresh onnxruntime-genai generator per turn on the same artifact.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import numpy as np
import onnxruntime_genai as og
import pytest

from runtime.engines.base import GenerationParams
from runtime.engines.chat import ChatEngine
from runtime.store.metadata import ModelMetadata

ALIAS = "qwen2.5-0.5b"
USER_TURNS = [
    "Hello! Tell me about the weather in Paris.",
    "And what about tomorrow?",
    "Should I bring an umbrella for the museum visit?",
    "Thanks. Which museums open early on Sunday?",
    "Great, summarise the plan for me in one line.",
]
SYSTEM = "You are a helpful travel assistant. " * 8


@pytest.fixture(scope="module")
def artifact(genai_artifact):
    return genai_artifact(ALIAS)


@pytest.fixture(scope="module")
def engine(artifact):
    chat = ChatEngine(artifact, ModelMetadata(tool_parser="qwen"), model_id="tiny-qwen-reuse")
    yield chat
    chat.close()


def _cold(artifact, model, prompt_ids: list[int], max_tokens: int, eos: set[int]) -> list[int]:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + max_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    out: list[int] = []
    while not generator.is_done() and len(out) < max_tokens:
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in eos:
            break
        out.append(token)
    return out


async def _turn(engine: ChatEngine, prompt_ids: list[int], max_tokens: int):
    ids, text, last = [], "", None
    async for chunk in engine.stream(
        prompt_ids, GenerationParams(max_tokens=max_tokens, temperature=0)
    ):
        ids += chunk.token_ids
        text += chunk.text
        last = chunk
    return ids, text, last


def _conversation(engine: ChatEngine, artifact, edit_replies: bool = False):
    model = og.Model(str(artifact))
    eos = engine.eos_ids
    messages = [{"role": "system", "content": SYSTEM}]
    turns = []
    for i, user in enumerate(USER_TURNS):
        messages.append({"role": "user", "content": user})
        prompt_ids = engine.encode(engine.render_prompt(messages))
        ids, text, last = asyncio.run(_turn(engine, prompt_ids, 12))
        turns.append(
            {
                "prompt": len(prompt_ids),
                "ids": ids,
                "cached": last.cached_tokens,
                "cold": _cold(artifact, model, prompt_ids, 12, eos),
            }
        )
        reply = f"(edited reply {i})" if edit_replies else text
        messages.append({"role": "assistant", "content": reply})
    return turns


def test_five_turn_chat_gives_cold_run_tokens_and_reports_cached_tokens(engine, artifact):
    engine.prefix_cache.clear()
    turns = _conversation(engine, artifact)
    for i, turn in enumerate(turns):
        assert turn["ids"] == turn["cold"], f"turn {i + 1} differs from a cold run"
    assert turns[0]["cached"] == 0
    for previous, turn in itertools.pairwise(turns):
        # The previous turn's prompt (system + history) is reused, down to an even length
        # (prefix_cache.ROW_ALIGNMENT), and never the whole prompt.
        assert previous["prompt"] - 1 <= turn["cached"] < turn["prompt"]


@pytest.fixture(scope="module")
def int4_artifact(tiny_source, tmp_path_factory):
    """The tiny Qwen2.5 at int4 (MatMulNBits), where row pairing changes numerics."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("int4")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(tiny_source(ALIAS)),
            "-o",
            str(out),
            "-p",
            "int4",
            "-e",
            "cpu",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def test_int4_five_turn_chat_also_gives_cold_run_tokens(int4_artifact):
    chat = ChatEngine(int4_artifact, ModelMetadata(tool_parser="qwen"), model_id="tiny-qwen-int4")
    try:
        turns = _conversation(chat, int4_artifact)
        for i, turn in enumerate(turns):
            assert turn["ids"] == turn["cold"], f"turn {i + 1} differs from a cold run"
        assert all(t["cached"] > 0 for t in turns[1:])
    finally:
        chat.close()


def test_a_client_that_edits_replies_still_reuses_the_common_prefix(engine, artifact):
    engine.prefix_cache.clear()
    turns = _conversation(engine, artifact, edit_replies=True)
    for turn in turns:
        assert turn["ids"] == turn["cold"]
    assert all(0 < t["cached"] < t["prompt"] for t in turns[1:])


def test_kept_states_stay_within_the_memory_bound(engine, artifact):
    cache = engine.prefix_cache
    first = engine.encode("<|im_start|>user\nfirst conversation<|im_end|>\n<|im_start|>assistant\n")
    second = engine.encode(
        "<|im_start|>user\nanother one entirely<|im_end|>\n<|im_start|>assistant\n"
    )
    per_entry = cache.bytes_per_token * max(len(first), len(second))  # the batch keeps the prompt
    old_budget = cache.budget_bytes
    cache.budget_bytes = int(per_entry * 1.5)  # room for one kept state, not two
    try:
        cache.clear()
        asyncio.run(_turn(engine, first, 4))
        asyncio.run(_turn(engine, second, 4))
        assert cache.kept_bytes() <= cache.budget_bytes
        greedy = GenerationParams(max_tokens=4, temperature=0)
        assert cache.reusable([*second, 1, 2], greedy) >= len(second) - 1  # the recent one is kept
        assert cache.reusable([*first, 1, 2], greedy) < len(first) - 1  # the older one was evicted
    finally:
        cache.budget_bytes = old_budget


def test_guided_and_seeded_requests_reuse_the_prompt_kv_and_keep_their_tokens(engine):
    """The batch keeps prompt KV, which depends on the tokens only: a guided or seeded turn may
    start from it, and gives the tokens it gives cold."""
    prompt = engine.encode(engine.render_prompt([{"role": "user", "content": SYSTEM}]))
    seeded = GenerationParams(max_tokens=8, temperature=0.9, seed=11)
    guided = GenerationParams(max_tokens=8, temperature=0, guidance=("regex", "[a-z ]{1,40}"))

    def tokens(params: GenerationParams) -> tuple[list[int], int]:
        async def run() -> tuple[list[int], int]:
            ids, last = [], None
            async for chunk in engine.stream(prompt, params):
                ids += chunk.token_ids
                last = chunk
            return ids, last.cached_tokens

        return asyncio.run(run())

    for params in (seeded, guided):
        engine.prefix_cache.clear()
        cold, cached_cold = tokens(params)
        warm, cached_warm = tokens(params)
        assert cached_cold == 0 and cached_warm >= len(prompt) - 2
        assert warm == cold


# --- through the service ----------------------------------------------------------------------


def test_five_turn_chat_through_the_service_matches_cold_runs_and_reports_cached_tokens(
    agent_models, openai_client, genai_artifact
):
    artifact = genai_artifact(ALIAS)  # what "agents-qwen" was registered from
    model = og.Model(str(artifact))
    tokenizer = og.Tokenizer(model)
    from runtime.engines.prompt import load_chat_template

    template = load_chat_template(artifact)
    eos_id = json.loads((artifact / "genai_config.json").read_text())["model"]["eos_token_id"]
    eos = set(eos_id if isinstance(eos_id, list) else [eos_id])
    messages = [{"role": "system", "content": SYSTEM}]
    cached = []
    for user in USER_TURNS:
        messages.append({"role": "user", "content": user})
        reply = openai_client.chat.completions.create(
            model="agents-qwen", messages=messages, max_tokens=12, temperature=0
        )
        prompt_ids = tokenizer.encode(template.render(messages)).tolist()
        cold = _cold(artifact, model, prompt_ids, 12, eos)
        assert reply.choices[0].message.content == tokenizer.decode(
            np.asarray(cold, dtype=np.int32)
        )
        assert reply.usage.prompt_tokens == len(prompt_ids)
        cached.append(reply.usage.prompt_tokens_details.cached_tokens)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    assert all(c > 0 for c in cached[1:]), cached
