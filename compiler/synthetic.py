"""Offline Hugging Face checkpoints with real architectures and seeded random weights.

Tests, the demo and `foundry-build ALIAS --synthetic` need checkpoints without the network.
Each one is the catalog model's real `config.json` (optionally shrunk, keeping the quirks the
builder cares about: longrope factors, partial rotary, GQA, tied embeddings, explicit head_dim),
a tokenizer trained here with the family's special tokens and real chat template
(`compiler.synthetic_tokens`), and weights drawn after `torch.manual_seed(seed)`. Same arguments
give byte-identical files, so a build key that digests the folder is stable.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from compiler.synthetic_tokens import (
    CATALOG_DIR,
    STYLES,
    WHISPER_LANGS,
    TokenStyle,
    write_json,
    write_tokenizer,
    write_wordpiece,
)
from runtime.errors import InsufficientMemory, SourceError

# Vocabulary of a shrunk checkpoint when the caller gives none (tiny and fast to embed).
TINY_VOCAB = 512

# alias -> (architecture family as the manifest names it, token style in STYLES)
_ALIASES: dict[str, tuple[str, str]] = {
    "qwen2.5-0.5b": ("qwen2", "qwen2.5"),
    "qwen2.5-1.5b": ("qwen2", "qwen2.5"),
    "qwen2.5-7b": ("qwen2", "qwen2.5"),
    "qwen2.5-coder-1.5b": ("qwen2", "qwen2.5"),
    "qwen3-0.6b": ("qwen3", "qwen3"),
    "qwen3-1.7b": ("qwen3", "qwen3"),
    "qwen3-4b": ("qwen3", "qwen3"),
    "deepseek-r1-distill-qwen-1.5b": ("qwen2", "deepseek-r1-qwen"),
    "deepseek-r1-distill-qwen-7b": ("qwen2", "deepseek-r1-qwen"),
    "deepseek-r1-distill-llama-8b": ("llama", "deepseek-r1-llama"),
    "llama-3.2-1b": ("llama", "llama3"),
    "mistral-7b-instruct": ("mistral", "mistral"),
    "phi-3.5-mini": ("phi3", "phi-3.5"),
    "phi-4-mini": ("phi3", "phi-4-mini"),
    "whisper-tiny": ("whisper", "whisper"),
    "whisper-base": ("whisper", "whisper"),
    "whisper-small": ("whisper", "whisper"),
    "all-minilm-l6-v2": ("bert", "bert"),
}

SYNTHETIC_FAMILIES: dict[str, str] = {alias: fam for alias, (fam, _) in _ALIASES.items()}

WHISPER_FEATURE_EXTRACTOR: dict[str, Any] = {
    "chunk_length": 30,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 80,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "WhisperProcessor",
    "return_attention_mask": False,
    "sampling_rate": 16000,
}


def list_synthetic_aliases() -> list[str]:
    """Catalog aliases that `synthetic_source` can build, sorted."""
    return sorted(_ALIASES)


def token_style(alias: str) -> TokenStyle | None:
    """The alias's tokenizer surface (None for the BERT embedding model)."""
    return STYLES.get(_ALIASES[_check_alias(alias)][1])


def real_config(alias: str) -> dict[str, Any]:
    """The catalog's copy of the model's real Hugging Face config.json."""
    return json.loads((CATALOG_DIR / "configs" / f"{_check_alias(alias)}.json").read_text())


def synthetic_source(
    alias: str,
    dest: Path,
    *,
    layers: int | None = None,
    hidden: int | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a checkpoint folder for `alias` with seeded random weights and return `dest`.

    `layers`/`hidden`/`vocab_size` shrink the real config (vocabulary TINY_VOCAB unless given);
    without any of them the real dimensions and vocabulary size are kept.
    """
    family, style_name = _ALIASES[_check_alias(alias)]
    _check_sizes(layers, hidden, vocab_size)
    config = shrink_config(real_config(alias), family, layers=layers, hidden=hidden)
    config["vocab_size"] = _vocab(config, layers, hidden, vocab_size)
    _check_memory(alias, family, config)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    silent: list[int] = []
    if family == "bert":
        config["vocab_size"] = max(
            config["vocab_size"], write_wordpiece(dest, config["vocab_size"])
        )
        _write_sentence_transformers(dest, config["hidden_size"])
    else:
        style = STYLES[style_name]
        limit = config.get("max_position_embeddings") or config.get("max_target_positions")
        ids, silent = write_tokenizer(dest, style, config["vocab_size"], limit)
        _set_config_ids(config, style, ids)
        write_json(dest / "generation_config.json", _generation_config(family, style, ids, config))
    config["torch_dtype"] = "float32"
    # The real config's suppress_tokens are ids of the real vocabulary, not of the synthetic
    # tokenizer's; generation_config.json says what a synthetic model suppresses.
    config.pop("suppress_tokens", None)
    write_json(dest / "config.json", config)
    if family == "whisper":
        write_json(dest / "preprocessor_config.json", WHISPER_FEATURE_EXTRACTOR)
    _write_weights(dest, family, seed, silent)
    return dest


def synthetic_parameters(
    alias: str, *, layers: int | None = None, hidden: int | None = None,
    vocab_size: int | None = None,
) -> int:  # fmt: skip
    """How many parameters `synthetic_source` would write (counted on the meta device)."""
    family = SYNTHETIC_FAMILIES[_check_alias(alias)]
    config = shrink_config(real_config(alias), family, layers=layers, hidden=hidden)
    config["vocab_size"] = _vocab(config, layers, hidden, vocab_size)
    return _count_parameters(family, config)


# --- config shrinking --------------------------------------------------------------------


def shrink_config(
    config: dict[str, Any], family: str, *, layers: int | None, hidden: int | None
) -> dict[str, Any]:
    """Scale a real config down while keeping what makes the architecture itself."""
    config = copy.deepcopy(config)
    config.pop("auto_map", None)  # remote code is never needed: every family is in transformers
    config.pop("_name_or_path", None)
    if family == "whisper":
        return _shrink_whisper(config, layers, hidden)
    if layers is not None:
        config["num_hidden_layers"] = layers
        if "max_window_layers" in config:
            config["max_window_layers"] = min(config["max_window_layers"], layers)
        if isinstance(config.get("layer_types"), list):
            config["layer_types"] = config["layer_types"][:layers]
    if hidden is not None:
        _shrink_width(config, hidden)
    return config


def _shrink_width(config: dict[str, Any], hidden: int) -> None:
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads")
    old_hidden = config["hidden_size"]
    rotary = config.get("partial_rotary_factor", 1.0)
    head_dim = _head_dim(hidden, config.get("head_dim") or old_hidden // heads, rotary)
    config["hidden_size"] = hidden
    config["num_attention_heads"] = hidden // head_dim
    if kv_heads is not None:
        config["num_key_value_heads"] = _kv_heads(hidden // head_dim, heads // kv_heads)
    if "head_dim" in config:
        config["head_dim"] = head_dim
    config["intermediate_size"] = _round8(config["intermediate_size"] * hidden / old_hidden)
    rope = config.get("rope_scaling")
    if isinstance(rope, dict) and "long_factor" in rope:
        half = int(head_dim * rotary) // 2
        config["rope_scaling"] = dict(
            rope,
            long_factor=_resample(rope["long_factor"], half),
            short_factor=_resample(rope["short_factor"], half),
        )


def _shrink_whisper(
    config: dict[str, Any], layers: int | None, hidden: int | None
) -> dict[str, Any]:
    if layers is not None:
        config["encoder_layers"] = config["decoder_layers"] = layers
        config["num_hidden_layers"] = layers
    if hidden is not None:
        old = config["d_model"]
        head_dim = _head_dim(hidden, old // config["encoder_attention_heads"], 0.0)
        config["d_model"] = hidden
        config["encoder_attention_heads"] = config["decoder_attention_heads"] = hidden // head_dim
        for key in ("encoder_ffn_dim", "decoder_ffn_dim"):
            config[key] = _round8(config[key] * hidden / old)
    return config


def _head_dim(hidden: int, old: int, rotary_fraction: float) -> int:
    """The head size nearest hidden/4 that divides `hidden` and suits onnxruntime's rotary kernel.

    GroupQueryAttention wants the rotary half-size to be a multiple of 8, so Phi-4-mini's partial
    rotary (0.75) needs heads of 64: at hidden 64 it keeps one head (use hidden 128 for GQA).
    """
    target = max(16, hidden // 4)
    fits = [
        d
        for d in (16, 32, 64, 128, 256)
        if d <= max(old, 16) and hidden % d == 0 and (d * rotary_fraction) % 16 == 0
    ]
    if not fits:
        raise SourceError(f"--hidden {hidden} leaves no valid attention head size; try 64 or 128")
    return min(fits, key=lambda d: (abs(d - target), d))


def _kv_heads(heads: int, group: int) -> int:
    """The largest divisor of `heads` that keeps at least the original query-per-KV ratio."""
    return max(d for d in range(1, heads + 1) if heads % d == 0 and heads // d >= min(group, heads))


def _resample(values: list[float], n: int) -> list[float]:
    """Linear resampling of a longrope factor list to `n` entries (keeps its shape and ends)."""
    if n == len(values):
        return list(values)
    if n == 1:
        return [values[0]]
    out = []
    for i in range(n):
        x = i * (len(values) - 1) / (n - 1)
        lo = math.floor(x)
        hi = min(lo + 1, len(values) - 1)
        out.append(values[lo] if x == lo else values[lo] + (values[hi] - values[lo]) * (x - lo))
    return out


def _round8(x: float) -> int:
    return max(8, round(x / 8) * 8)


def _vocab(config: dict, layers: int | None, hidden: int | None, vocab_size: int | None) -> int:
    if vocab_size is not None:
        return vocab_size
    shrinking = layers is not None or hidden is not None
    return TINY_VOCAB if shrinking else config["vocab_size"]


def _check_alias(alias: str) -> str:
    if alias not in _ALIASES:
        raise SourceError(
            f"no synthetic checkpoint for '{alias}'",
            hint="one of: " + ", ".join(list_synthetic_aliases()),
        )
    return alias


def _check_sizes(layers: int | None, hidden: int | None, vocab: int | None) -> None:
    if layers is not None and not 1 <= layers <= 256:
        raise SourceError(f"--layers must be between 1 and 256, got {layers}")
    if hidden is not None and (hidden < 16 or hidden % 16):
        raise SourceError(f"--hidden must be a multiple of 16 (at least 16), got {hidden}")
    if vocab is not None and vocab < 384:
        raise SourceError(f"vocab_size must be at least 384, got {vocab}")


# --- token ids in config.json and generation_config.json ----------------------------------


def _set_config_ids(config: dict[str, Any], style: TokenStyle, ids: dict[str, int]) -> None:
    if style.config_bos is not None:
        config["bos_token_id"] = ids[style.config_bos]
    eos = [ids[t] for t in style.config_eos]
    config["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if style.config_pad is not None or "pad_token_id" in config:
        config["pad_token_id"] = ids[style.config_pad] if style.config_pad else None
    if "decoder_start_token_id" in config:  # whisper
        config["decoder_start_token_id"] = ids["<|startoftranscript|>"]
        config["begin_suppress_tokens"] = [ids["<|endoftext|>"]]
        config["suppress_tokens"] = []
        config["forced_decoder_ids"] = None


def _generation_config(
    family: str, style: TokenStyle, ids: dict[str, int], config: dict[str, Any]
) -> dict[str, Any]:
    if family == "whisper":
        return _whisper_generation_config(ids, config)
    eos = [ids[t] for t in style.generation_eos]
    out: dict[str, Any] = {
        "bos_token_id": config.get("bos_token_id"),
        "eos_token_id": eos[0] if len(eos) == 1 else eos,
    }
    if style.pad is not None:
        out["pad_token_id"] = ids[style.pad]
    return out


def _whisper_generation_config(ids: dict[str, int], config: dict[str, Any]) -> dict[str, Any]:
    """What WhisperForConditionalGeneration.generate reads to force language, task, timestamps."""
    eot = ids["<|endoftext|>"]
    return {
        "begin_suppress_tokens": [eot],
        "bos_token_id": eot,
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": eot,
        "is_multilingual": True,
        "lang_to_id": {f"<|{lang}|>": ids[f"<|{lang}|>"] for lang in WHISPER_LANGS},
        "max_initial_timestamp_index": 50,
        "max_length": config.get("max_target_positions", 448),
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "pad_token_id": eot,
        "prev_sot_token_id": ids["<|startofprev|>"],
        "return_timestamps": False,
        "suppress_tokens": [],
        "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    }


def _write_sentence_transformers(dest: Path, hidden: int) -> None:
    """sentence-transformers' module list and mean pooling, as all-MiniLM-L6-v2 ships them."""
    modules = [
        ("0", "", "Transformer"),
        ("1", "1_Pooling", "Pooling"),
        ("2", "2_Normalize", "Normalize"),
    ]
    write_json(dest / "modules.json", [
        {"idx": i, "name": name, "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (name, path, kind) in enumerate(modules)
    ])  # fmt: skip
    write_json(dest / "sentence_bert_config.json", {"max_seq_length": 256, "do_lower_case": False})
    (dest / "1_Pooling").mkdir(exist_ok=True)
    write_json(dest / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })  # fmt: skip


# --- weights ------------------------------------------------------------------------------


def _write_weights(dest: Path, family: str, seed: int, silent_ids: list[int]) -> None:
    """Instantiate the real model class from config.json and save seeded weights.

    The init std is 0.8/sqrt(hidden) rather than the config's 0.02: at 0.02 a tiny model's
    residual stream is its input embedding and greedy decoding repeats one token forever.
    Rows of `silent_ids` (special tokens, lone bytes) in the output projection are zero, so
    their logit is 0 while ordinary tokens spread around it: the model writes varied text and
    never stops by itself (callers bound generation with max_tokens or stop strings).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(dest)
    hidden = getattr(config, "d_model", None) or config.hidden_size
    config.initializer_range = config.init_std = 0.8 / math.sqrt(hidden)
    torch.manual_seed(seed)
    model = _instantiate(family, config)
    output = model.get_output_embeddings()
    if output is not None and silent_ids:
        with torch.no_grad():
            output.weight[silent_ids] = 0.0
    state: dict[str, Any] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied weights are stored once, as transformers does
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.contiguous()
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "model.safetensors").chmod(0o644)  # safetensors writes 0600; keep the folder uniform


def _instantiate(family: str, config: Any) -> Any:
    """The family's real transformers class, built from `config` (fp32, default device)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, WhisperForConditionalGeneration

    if family == "whisper":
        return WhisperForConditionalGeneration(config)
    if family == "bert":
        return AutoModel.from_config(config)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _count_parameters(family: str, config: dict[str, Any]) -> int:
    import torch
    from transformers import AutoConfig

    # token ids come later (and some config classes default them past a tiny vocabulary);
    # a deep copy, because transformers rewrites rope_scaling dicts in place
    shape_only = {**copy.deepcopy(config), "bos_token_id": None, "eos_token_id": None}
    shape_only["pad_token_id"] = None
    if "decoder_start_token_id" in config:
        shape_only["decoder_start_token_id"] = 0
    with torch.device("meta"):
        model = _instantiate(family, AutoConfig.for_model(**shape_only))
    return sum(p.numel() for p in model.parameters())  # parameters() lists tied weights once


def _check_memory(alias: str, family: str, config: dict[str, Any]) -> None:
    """Refuse before writing anything when fp32 weights would not fit in available memory."""
    available = _available_memory()
    need = int(_count_parameters(family, config) * 4 * 1.5)  # measured peak: 1.45x fp32 weights
    if available and need > available:
        raise InsufficientMemory(
            f"a full-size synthetic '{alias}' needs about {need / 1e9:.1f} GB of memory; "
            f"{available / 1e9:.1f} GB is available",
            hint=f"foundry-build {alias} --synthetic --layers 2 --hidden 64",
        )


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0  # unknown: do not refuse
