"""Synthetic checkpoints: real architectures and templates, seeded weights, offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compiler.synthetic import (
    SYNTHETIC_FAMILIES,
    list_synthetic_aliases,
    real_config,
    shrink_config,
    synthetic_source,
    token_style,
)
from runtime.errors import SourceError

# One alias per chat template / architecture pair.
CHAT_ALIASES = [
    "qwen2.5-0.5b",
    "qwen3-0.6b",
    "deepseek-r1-distill-qwen-1.5b",
    "deepseek-r1-distill-llama-8b",
    "llama-3.2-1b",
    "mistral-7b-instruct",
    "phi-3.5-mini",
    "phi-4-mini",
]
TOOL_ALIASES = ["qwen2.5-0.5b", "qwen3-0.6b", "llama-3.2-1b", "mistral-7b-instruct", "phi-4-mini"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
TOOL_ROUND_TRIP = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call00001",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call00001", "content": '{"celsius": 21}'},
]


def _digests(folder: Path) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_the_same_arguments_write_byte_identical_files(tmp_path: Path, tiny_source) -> None:
    again = synthetic_source("qwen2.5-0.5b", tmp_path / "again", layers=2, hidden=64)
    assert _digests(again) == _digests(tiny_source("qwen2.5-0.5b"))


def test_another_seed_gives_other_weights_and_the_same_tokenizer(
    tmp_path: Path, tiny_source
) -> None:
    other = _digests(synthetic_source("qwen2.5-0.5b", tmp_path / "s1", layers=2, hidden=64, seed=1))
    base = _digests(tiny_source("qwen2.5-0.5b"))
    assert other["model.safetensors"] != base["model.safetensors"]
    assert other["tokenizer.json"] == base["tokenizer.json"]


def test_a_fresh_process_writes_the_same_bytes_for_a_chat_and_an_embedding_model(
    tiny_source,
) -> None:
    """Tokenizer training must not depend on hash seeds: build keys digest these files."""
    import subprocess
    import sys

    code = (
        "import hashlib, json, sys, tempfile; from pathlib import Path\n"
        "from compiler.synthetic import synthetic_source\n"
        "out = {}\n"
        "for alias in sys.argv[1:]:\n"
        "    p = synthetic_source(alias, Path(tempfile.mkdtemp()) / alias, layers=2, hidden=64)\n"
        "    out[alias] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()"
        " for f in sorted(p.rglob('*')) if f.is_file()}\n"
        "print(json.dumps(out))\n"
    )
    aliases = ["qwen2.5-0.5b", "all-minilm-l6-v2"]
    done = subprocess.run(
        [sys.executable, "-c", code, *aliases],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "PYTHONHASHSEED": "123"},
    )
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    for alias in aliases:
        assert fresh[alias] == _digests(tiny_source(alias)), alias


def test_a_full_size_checkpoint_that_cannot_fit_in_memory_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.errors import InsufficientMemory

    monkeypatch.setattr("compiler.synthetic._available_memory", lambda: 1_000_000_000)
    with pytest.raises(InsufficientMemory) as err:
        synthetic_source("qwen2.5-0.5b", tmp_path / "full")
    assert "--layers" in (err.value.hint or "")
    assert not (tmp_path / "full").exists()


def test_parameter_counts_of_full_size_shapes_match_the_published_models() -> None:
    from compiler.synthetic import synthetic_parameters

    assert round(synthetic_parameters("qwen2.5-0.5b") / 1e6) == 494
    assert round(synthetic_parameters("phi-3.5-mini") / 1e6) == 3821
    assert round(synthetic_parameters("whisper-tiny") / 1e6) == 38


def test_an_unknown_alias_is_refused_with_the_known_ones_in_the_hint(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        synthetic_source("gpt-9", tmp_path / "x")
    assert "qwen2.5-0.5b" in (err.value.hint or "")
    assert not (tmp_path / "x").exists()


def test_a_hidden_size_that_fits_no_head_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--hidden"):
        synthetic_source("qwen2.5-0.5b", tmp_path / "x", layers=2, hidden=40)


@pytest.mark.parametrize("alias", list_synthetic_aliases())
def test_every_alias_has_a_real_config_that_shrinks_into_a_valid_transformers_config(
    alias: str,
) -> None:
    from transformers import AutoConfig

    family = SYNTHETIC_FAMILIES[alias]
    real = real_config(alias)
    assert real["architectures"] and real.get("model_type")
    small = shrink_config(real, family, layers=2, hidden=64)
    config = AutoConfig.for_model(**small)
    heads = small.get("num_attention_heads") or small["encoder_attention_heads"]
    hidden = small.get("hidden_size") or small["d_model"]
    assert hidden == 64 and hidden % heads == 0
    if "num_key_value_heads" in real:  # grouped-query attention stays grouped
        ratio = real["num_attention_heads"] // real["num_key_value_heads"]
        assert heads % small["num_key_value_heads"] == 0
        assert (heads // small["num_key_value_heads"] > 1) == (ratio > 1 and heads > 1)
    assert config.model_type == real["model_type"]


def test_shrinking_phi_35_keeps_longrope_with_factors_of_half_the_new_head_size() -> None:
    real = real_config("phi-3.5-mini")
    small = shrink_config(real, "phi3", layers=2, hidden=64)
    head_dim = small["hidden_size"] // small["num_attention_heads"]
    rope = small["rope_scaling"]
    assert rope["type"] == "longrope" and len(real["rope_scaling"]["long_factor"]) == 48
    assert len(rope["long_factor"]) == len(rope["short_factor"]) == head_dim // 2
    assert rope["long_factor"][0] == real["rope_scaling"]["long_factor"][0]
    assert rope["long_factor"][-1] == real["rope_scaling"]["long_factor"][-1]
    assert small["original_max_position_embeddings"] == 4096


def test_the_written_config_is_the_real_one_with_only_the_shrunk_fields_changed(
    tiny_source,
) -> None:
    written = json.loads((tiny_source("phi-3.5-mini") / "config.json").read_text())
    real = real_config("phi-3.5-mini")
    assert set(written["rope_scaling"]) == set(real["rope_scaling"])
    changed = {k for k in real if written.get(k) != real[k]}
    assert changed <= {
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id",
        "rope_scaling", "torch_dtype", "auto_map", "_name_or_path",
    }  # fmt: skip


def test_shrinking_phi_4_mini_keeps_partial_rotary_and_tied_embeddings() -> None:
    small = shrink_config(real_config("phi-4-mini"), "phi3", layers=2, hidden=128)
    head_dim = small["hidden_size"] // small["num_attention_heads"]
    assert small["partial_rotary_factor"] == 0.75 and small["tie_word_embeddings"] is True
    assert len(small["rope_scaling"]["long_factor"]) == int(head_dim * 0.75) // 2
    assert small["num_attention_heads"] > small["num_key_value_heads"]


def test_shrinking_keeps_llama3_rope_scaling_and_qwen3_explicit_head_dim() -> None:
    llama = shrink_config(real_config("deepseek-r1-distill-llama-8b"), "llama", layers=2, hidden=64)
    assert llama["rope_scaling"]["rope_type"] == "llama3" and llama["rope_scaling"]["factor"] == 8.0
    qwen3 = shrink_config(real_config("qwen3-0.6b"), "qwen3", layers=2, hidden=64)
    assert qwen3["head_dim"] == 64 // qwen3["num_attention_heads"]


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_a_tiny_checkpoint_loads_in_transformers_and_generates_varied_text(
    alias: str, tiny_source
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = tiny_source(alias)
    tokenizer = _tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert "What is the weather in Paris?" in prompt
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False
    )
    new = out[0, ids.shape[1] :].tolist()
    assert len(new) == 16  # a synthetic model never stops by itself
    assert len(set(new)) > 2
    assert not set(new) & set(tokenizer.all_special_ids)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 64
    assert config["vocab_size"] == len(tokenizer)


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_config_and_generation_config_name_the_tokenizers_own_special_ids(
    alias: str, tiny_source
) -> None:
    folder = tiny_source(alias)
    tokenizer = _tokenizer(folder)
    style = token_style(alias)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    assert config["bos_token_id"] == tokenizer.convert_tokens_to_ids(style.config_bos)
    eos = (
        generation["eos_token_id"]
        if isinstance(generation["eos_token_id"], list)
        else [generation["eos_token_id"]]
    )
    assert eos == tokenizer.convert_tokens_to_ids(list(style.generation_eos))
    assert tokenizer.eos_token == style.eos and tokenizer.eos_token_id in [
        *eos,
        config["eos_token_id"],
    ]


@pytest.mark.parametrize("alias", TOOL_ALIASES)
def test_the_chat_template_renders_tools_and_a_tool_call_round_trip(
    alias: str, tiny_source
) -> None:
    tokenizer = _tokenizer(tiny_source(alias))
    prompt = tokenizer.apply_chat_template(
        CONVERSATION, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    assert "get_weather" in prompt and "What is the weather in Paris?" in prompt
    turn = tokenizer.apply_chat_template(
        TOOL_ROUND_TRIP, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    # the tool result is rendered (Llama 3.1's real template JSON-quotes string content) ...
    assert "celsius" in turn and "21" in turn
    # ... and so is the assistant's call, after the question
    assert "Paris" in turn.split("What is the weather in Paris?")[-1]


@pytest.mark.parametrize("alias", ["qwen3-0.6b", "deepseek-r1-distill-qwen-1.5b"])
def test_reasoning_templates_use_think_tokens_the_tokenizer_keeps_whole(
    alias: str, tiny_source
) -> None:
    tokenizer = _tokenizer(tiny_source(alias))
    history = [
        *CONVERSATION,
        {"role": "assistant", "content": "<think>\nhm\n</think>\n\nSunny."},
        {"role": "user", "content": "Thanks"},
    ]
    prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert (
        "Sunny." in prompt and "hm" not in prompt
    )  # earlier reasoning is dropped, as in the real models
    assert len(tokenizer.encode("<think>", add_special_tokens=False)) == 1


def test_a_tiny_whisper_transcribes_with_transformers_generate(tiny_source) -> None:
    import numpy as np
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    folder = tiny_source("whisper-tiny")
    processor = AutoProcessor.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    audio = (np.sin(np.linspace(0, 2000, 32000)) * 0.1).astype(np.float32)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    assert tuple(features.shape) == (1, 80, 3000)
    out = model.generate(features, max_new_tokens=8, language="en", task="transcribe")
    assert out.shape[-1] >= 8
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["lang_to_id"]["<|en|>"] == processor.tokenizer.convert_tokens_to_ids("<|en|>")


def test_a_tiny_embedding_model_has_sentence_transformers_pooling(tiny_source) -> None:
    from transformers import AutoModel

    folder = tiny_source("all-minilm-l6-v2")
    tokenizer = _tokenizer(folder)
    batch = tokenizer(["Hello world", "The weather in Paris"], padding=True, return_tensors="pt")
    hidden = AutoModel.from_pretrained(folder)(**batch).last_hidden_state
    assert hidden.shape[-1] == 64
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == 64


def test_the_genai_builder_converts_tiny_phi_35_with_longrope_and_matches_transformers(
    tmp_path: Path, tiny_source
) -> None:
    """Without longrope in the config the 0.18 builder dies with KeyError: 'multi_cache'."""
    import sys

    import onnxruntime_genai as og
    import torch
    from onnxruntime_genai.models import builder as builder_module
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(builder_module.__file__).parent))  # 0.18 imports siblings flat
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    src, out, cache = tiny_source("phi-3.5-mini"), tmp_path / "onnx", tmp_path / "cache"
    options = parse_extra_options(str(src), str(src), str(out), "fp32", "cpu", str(cache), [])
    create_model(str(src), str(src), str(out), "fp32", "cpu", str(cache), **options)
    tokenizer = _tokenizer(src)
    prompt = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    model = og.Model(str(out))
    assert list(og.Tokenizer(model).encode(prompt)) == ids
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 12, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    onnx_tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        onnx_tokens.append(int(generator.get_next_tokens()[0]))
    reference = (
        AutoModelForCausalLM.from_pretrained(src)
        .generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=12,
            do_sample=False,
        )[0, len(ids) :]
        .tolist()
    )
    assert onnx_tokens == reference
