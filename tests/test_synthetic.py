"""Synthetic checkpoints: real architectures and templates, seeded weights, offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compiler.synthetic import SYNTHETIC_FAMILIES, list_synthetic_aliases, synthetic_source
from runtime.errors import SourceError

CHAT_ALIASES = ["qwen2.5-0.5b"]

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_the_same_arguments_write_byte_identical_files(tmp_path: Path, tiny_source) -> None:
    again = synthetic_source("qwen2.5-0.5b", tmp_path / "again", layers=2, hidden=64)
    assert _digests(again) == _digests(tiny_source("qwen2.5-0.5b"))


def test_another_seed_gives_other_weights_and_the_same_tokenizer(tmp_path: Path, tiny_source) -> None:
    other = _digests(synthetic_source("qwen2.5-0.5b", tmp_path / "s1", layers=2, hidden=64, seed=1))
    base = _digests(tiny_source("qwen2.5-0.5b"))
    assert other["model.safetensors"] != base["model.safetensors"]
    assert other["tokenizer.json"] == base["tokenizer.json"]


def test_an_unknown_alias_is_refused_with_the_known_ones_in_the_hint(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        synthetic_source("gpt-9", tmp_path / "x")
    assert "qwen2.5-0.5b" in (err.value.hint or "")


def test_every_alias_has_a_family_and_a_real_config() -> None:
    from compiler.synthetic import real_config

    for alias in CHAT_ALIASES:
        assert alias in list_synthetic_aliases()
        assert SYNTHETIC_FAMILIES[alias]
        assert real_config(alias)["architectures"]


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_a_tiny_checkpoint_loads_in_transformers_and_generates_varied_text(alias: str, tiny_source) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_source(alias)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    new = out[0, ids.shape[1]:].tolist()
    assert len(new) == 16  # a synthetic model never stops by itself
    assert len(set(new)) > 3
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 64
    assert config["vocab_size"] == len(tokenizer)


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_the_chat_template_renders_tools_in_the_prompt(alias: str, tiny_source) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_source(alias))
    prompt = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert "get_weather" in prompt and "What is the weather in Paris?" in prompt
