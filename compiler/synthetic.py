"""Offline Hugging Face checkpoints with real architectures and seeded random weights.

Tests, the demo and `foundry-build ALIAS --synthetic` need checkpoints without the network.
Each one is the catalog model's real `config.json` (optionally shrunk, keeping the quirks the
builder cares about: longrope factors, partial rotary, GQA, tied embeddings, explicit head_dim),
a byte-level BPE tokenizer trained here on a built-in corpus with the family's special tokens
and real chat template, and weights drawn from `torch.manual_seed(seed)`. Same arguments give
byte-identical files, so the compiler's build key (a digest of the folder) is stable.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import msgspec

from runtime.errors import SourceError

CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalog"

# Vocabulary of a shrunk checkpoint when the caller gives none (tiny and fast to embed).
TINY_VOCAB = 512


class TokenStyle(msgspec.Struct, frozen=True):
    """A family's tokenizer surface: its chat template and special tokens, by text."""

    template: str | None
    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    config_bos: str | None = None  # config.json's bos_token_id (may differ from the tokenizer's)
    config_eos: tuple[str, ...] = ()  # config.json's eos_token_id; one -> int, several -> list
    config_pad: str | None = None
    generation_eos: tuple[str, ...] = ()
    extra_specials: tuple[str, ...] = ()  # listed as additional_special_tokens


_QWEN_BASE = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
_QWEN3 = _QWEN_BASE + ("<tool_response>", "</tool_response>", "<think>", "</think>")
_DEEPSEEK = (
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>", "<｜Assistant｜>",
    "<think>", "</think>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>",
)
_LLAMA3 = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>",
)
_MISTRAL = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
)
_PHI35 = (
    "<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|placeholder1|>",
    "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
    "<|placeholder5|>", "<|placeholder6|>", "<|user|>",
)
_PHI4 = (
    "<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>", "<|tool|>",
    "<|/tool|>", "<|tool_call|>", "<|/tool_call|>", "<|tool_response|>", "<|tag|>",
)
_WHISPER_LANGS = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su"
).split()
_WHISPER = (
    ("<|endoftext|>", "<|startoftranscript|>")
    + tuple(f"<|{lang}|>" for lang in _WHISPER_LANGS)
    + ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
       "<|notimestamps|>")
)

STYLES: dict[str, TokenStyle] = {
    "qwen2.5": TokenStyle(
        "qwen2.5", _QWEN_BASE, eos="<|im_end|>", pad="<|endoftext|>",
        config_bos="<|endoftext|>", config_eos=("<|im_end|>",),
        generation_eos=("<|im_end|>", "<|endoftext|>"), extra_specials=_QWEN_BASE[1:14],
    ),
    "qwen3": TokenStyle(
        "qwen3", _QWEN3, eos="<|im_end|>", pad="<|endoftext|>",
        config_bos="<|endoftext|>", config_eos=("<|im_end|>",),
        generation_eos=("<|im_end|>", "<|endoftext|>"), extra_specials=_QWEN_BASE[1:14],
    ),
    "deepseek-r1-qwen": TokenStyle(
        "deepseek-r1", _QWEN_BASE + _DEEPSEEK, bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
        config_bos="<｜begin▁of▁sentence｜>", config_eos=("<｜end▁of▁sentence｜>",),
        generation_eos=("<｜end▁of▁sentence｜>",),
    ),
    "deepseek-r1-llama": TokenStyle(
        "deepseek-r1", _LLAMA3 + _DEEPSEEK, bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
        config_bos="<｜begin▁of▁sentence｜>", config_eos=("<｜end▁of▁sentence｜>",),
        generation_eos=("<｜end▁of▁sentence｜>",),
    ),
    "llama3": TokenStyle(
        "llama3", _LLAMA3, bos="<|begin_of_text|>", eos="<|eot_id|>",
        config_bos="<|begin_of_text|>", config_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    ),
    "mistral": TokenStyle(
        "mistral", _MISTRAL, bos="<s>", eos="</s>", unk="<unk>",
        config_bos="<s>", config_eos=("</s>",), generation_eos=("</s>",),
    ),
    "phi-3.5": TokenStyle(
        "phi-3.5", _PHI35, bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>",
        config_bos="<s>", config_eos=("<|endoftext|>",), config_pad="<|endoftext|>",
        generation_eos=("<|end|>", "<|assistant|>", "<|endoftext|>"),
    ),
    "phi-4-mini": TokenStyle(
        "phi-4-mini", _PHI4, bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>",
        unk="<|endoftext|>", config_bos="<|endoftext|>", config_eos=("<|endoftext|>",),
        config_pad="<|endoftext|>", generation_eos=("<|end|>", "<|endoftext|>"),
    ),
    "whisper": TokenStyle(
        None, _WHISPER, bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>",
        unk="<|endoftext|>", config_bos="<|endoftext|>", config_eos=("<|endoftext|>",),
        config_pad="<|endoftext|>", generation_eos=("<|endoftext|>",),
        extra_specials=_WHISPER[1:],
    ),
}

# alias -> (architecture family as the manifest names it, token style)
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


def list_synthetic_aliases() -> list[str]:
    """Catalog aliases that `synthetic_source` can build, sorted."""
    return sorted(_ALIASES)


def token_style(alias: str) -> TokenStyle | None:
    """The alias's tokenizer surface (None for the BERT embedding model)."""
    return STYLES.get(_ALIASES[_check_alias(alias)][1])


def real_config(alias: str) -> dict[str, Any]:
    """The catalog's copy of the model's real Hugging Face config.json."""
    return json.loads((CATALOG_DIR / "configs" / f"{_check_alias(alias)}.json").read_text())


def chat_template(name: str) -> str:
    """A family's real chat template, from `catalog/templates/<name>.jinja`."""
    return (CATALOG_DIR / "templates" / f"{name}.jinja").read_text(encoding="utf-8").rstrip("\n")


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

    `layers`/`hidden`/`vocab_size` shrink the real config; without any of them the real
    dimensions and vocabulary size are kept (the tokenizer is padded with unreachable tokens).
    """
    family, style_name = _ALIASES[_check_alias(alias)]
    _check_sizes(layers, hidden, vocab_size)
    shrinking = layers is not None or hidden is not None or vocab_size is not None
    config = shrink_config(real_config(alias), family, layers=layers, hidden=hidden)
    vocab = vocab_size or (TINY_VOCAB if shrinking else config["vocab_size"])
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    silent: list[int] = []
    if family == "bert":
        config["vocab_size"] = max(vocab, _write_wordpiece(dest, vocab))
        _write_pooling(dest, config["hidden_size"])
    else:
        style = STYLES[style_name]
        ids, silent = _write_tokenizer(dest, style, vocab, config)
        config["vocab_size"] = vocab
        _set_config_ids(config, style, ids)
        _write_json(dest / "generation_config.json", _generation_config(family, style, ids, config))
    config["torch_dtype"] = "float32"
    _write_json(dest / "config.json", config)
    if family == "whisper":
        _write_json(dest / "preprocessor_config.json", WHISPER_FEATURE_EXTRACTOR)
    _write_weights(dest, family, seed, silent)
    return dest


# --- config shrinking --------------------------------------------------------------------


def shrink_config(
    config: dict[str, Any], family: str, *, layers: int | None, hidden: int | None
) -> dict[str, Any]:
    """Scale a real config down while keeping what makes the architecture itself."""
    config = dict(config)
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
    old_head_dim = config.get("head_dim") or old_hidden // heads
    rotary = config.get("partial_rotary_factor", 1.0)
    head_dim = _head_dim(hidden, old_head_dim, rotary)
    new_heads = hidden // head_dim
    config["hidden_size"] = hidden
    config["num_attention_heads"] = new_heads
    if kv_heads is not None:
        config["num_key_value_heads"] = _kv_heads(new_heads, heads // kv_heads)
    if "head_dim" in config:
        config["head_dim"] = head_dim
    config["intermediate_size"] = _round8(config["intermediate_size"] * hidden / old_hidden)
    rope = config.get("rope_scaling")
    if isinstance(rope, dict) and "long_factor" in rope:
        half = int(head_dim * rotary) // 2
        config["rope_scaling"] = dict(rope, long_factor=_resample(rope["long_factor"], half),
                                      short_factor=_resample(rope["short_factor"], half))


def _shrink_whisper(config: dict[str, Any], layers: int | None, hidden: int | None) -> dict[str, Any]:
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
    fits = [d for d in (16, 32, 64, 128, 256)
            if d <= max(old, 16) and hidden % d == 0 and (d * rotary_fraction) % 16 == 0]
    if not fits:
        raise SourceError(f"--hidden {hidden} leaves no valid attention head size; try a multiple of 64")
    return min(fits, key=lambda d: (abs(d - target), d))


def _kv_heads(heads: int, group: int) -> int:
    """The largest divisor of `heads` that keeps at least the original query-per-KV ratio."""
    return max(d for d in range(1, heads + 1) if heads % d == 0 and heads // d >= min(group, heads))


def _resample(values: list[float], n: int) -> list[float]:
    """Linear resampling of a longrope factor list to `n` entries (keeps its shape)."""
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
    return max(8, int(round(x / 8)) * 8)


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


# --- tokenizer -------------------------------------------------------------------------


def _write_tokenizer(
    dest: Path, style: TokenStyle, vocab: int, config: dict[str, Any]
) -> tuple[dict[str, int], list[int]]:
    """Train the BPE, write the tokenizer files; return the special tokens' ids and the silent ids."""
    specials = list(style.specials)
    if style.template is None and vocab >= len(specials) + 256 + 1501 + 512:  # whisper, full size
        specials += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokenizer = train_bpe(vocab - len(specials), specials, whisper=style.template is None)
    ids = {tok: tokenizer.token_to_id(tok) for tok in specials}
    (dest / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    tok_config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                          "single_word": False, "special": True}
            for t in specials
        },
        "bos_token": style.bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": style.eos,
        "errors": "replace",
        "model_max_length": config.get("max_position_embeddings") or config.get("max_target_positions"),
        "pad_token": style.pad,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": style.unk,
    }
    if style.template is not None:
        tok_config["chat_template"] = chat_template(style.template)
    _write_json(dest / "tokenizer_config.json", tok_config)
    special_map: dict[str, Any] = {
        k: v for k, v in (("bos_token", style.bos), ("eos_token", style.eos),
                          ("pad_token", style.pad), ("unk_token", style.unk)) if v is not None
    }
    if style.extra_specials:
        special_map["additional_special_tokens"] = list(style.extra_specials)
    _write_json(dest / "special_tokens_map.json", special_map)
    return ids, silent_token_ids(tokenizer, ids)


# Qwen2's pre-tokenizer split (digits one by one, words with a leading non-letter, whitespace runs).
SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_bpe(size: int, specials: list[str], *, whisper: bool = False) -> Any:
    """A byte-level BPE of exactly `size` ordinary tokens, then `specials` after them.

    Merges come from the built-in corpus; the rest of the vocabulary is filled with
    byte strings no merge produces, so every id in the embedding decodes to something.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if size < 256:
        raise SourceError(f"vocabulary too small for {len(specials)} special tokens plus 256 bytes")
    tokenizer = Tokenizer(models.BPE())
    if whisper:  # WhisperTokenizer rebuilds GPT-2's byte-level pre-tokenizer
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:  # Qwen2's: transformers 5 rebuilds exactly this for qwen2/qwen3 configs
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    printable = [BYTE_CHARS[b] for b in range(0x20, 0x7F)]  # fillers decode to valid UTF-8
    trainer = trainers.BpeTrainer(
        vocab_size=size, min_frequency=2, show_progress=False, initial_alphabet=alphabet
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    fillers = ("".join(chars) for n in itertools.count(2) for chars in itertools.product(printable, repeat=n))
    for token in fillers:
        if len(vocab) >= size:
            break
        if token not in vocab:
            vocab[token] = len(vocab)
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in keep)
    return {b: chr(b) if b in keep else chr(256 + i) for i, b in enumerate(extra)} | {b: chr(b) for b in keep}


BYTE_CHARS = _byte_chars()


def silent_token_ids(tokenizer: Any, special_ids: dict[str, int]) -> list[int]:
    """Special tokens, control bytes and lone bytes >= 0x80 (invalid UTF-8 alone).

    A random model should not pick them: they would end generation or print garbage.
    """
    odd = [b for b in range(0x100) if b >= 0x7F or (b < 0x20 and b not in (0x09, 0x0A))]
    lone = (tokenizer.token_to_id(BYTE_CHARS[b]) for b in odd)
    return sorted({*special_ids.values(), *(i for i in lone if i is not None)})


def corpus() -> list[str]:
    """A few hundred deterministic English sentences (plus code and JSON lines) to train on."""
    rng = random.Random(1234)
    subjects = ["The model", "A small cat", "My friend", "The service", "This answer", "Our team",
                "The weather", "A user", "The compiler", "Every token", "The assistant", "She", "He"]
    verbs = ["writes", "reads", "builds", "answers", "finds", "likes", "explains", "checks",
             "returns", "sends", "computes", "remembers", "translates", "counts"]
    objects = ["a short story", "the question", "three numbers", "the weather in Paris",
               "a JSON object", "the function call", "every sentence", "a list of cities",
               "the temperature", "a helpful reply", "the first token", "some Python code"]
    tails = ["today.", "quickly.", "for the user.", "in the morning.", "without errors.",
             "again and again.", "with care.", "on the local machine.", "before noon.", "."]
    lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
             for _ in range(300)]
    lines += [
        "Hello! How can I help you today?", "What is the capital of France? Paris is the capital.",
        "Please think step by step and give the final answer.", "1 + 2 = 3, 10 * 7 = 70, 99 - 1 = 98.",
        'def add(a, b):\n    return a + b\n', "for i in range(10):\n    print(i)\n",
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
        '{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}',
        "The quick brown fox jumps over the lazy dog.", "Summarize the text in one sentence.",
    ] * 5
    return lines


def _write_wordpiece(dest: Path, vocab: int) -> int:
    """BERT's side: a WordPiece vocabulary plus sentence-transformers' mean-pooling files."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    (dest / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    words = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (dest / "vocab.txt").write_text("".join(w + "\n" for w, _ in words), encoding="utf-8")
    named = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), specials))
    _write_json(dest / "tokenizer_config.json", {
        **named, "do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"})
    _write_json(dest / "special_tokens_map.json", named)
    _write_json(dest / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": 256, "do_lower_case": False})
    return tokenizer.get_vocab_size()


def _write_pooling(dest: Path, hidden: int) -> None:
    (dest / "1_Pooling").mkdir(exist_ok=True)
    _write_json(dest / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})


# --- ids in config.json and generation_config.json ---------------------------------------


def _set_config_ids(config: dict[str, Any], style: TokenStyle, ids: dict[str, int]) -> None:
    if style.config_bos is not None:
        config["bos_token_id"] = ids[style.config_bos]
    eos = [ids[t] for t in style.config_eos]
    config["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if style.config_pad is not None or "pad_token_id" in config:
        config["pad_token_id"] = ids[style.config_pad] if style.config_pad else None
    if "decoder_start_token_id" in config:
        config["decoder_start_token_id"] = ids["<|startoftranscript|>"]
        config["begin_suppress_tokens"] = [ids["<|endoftext|>"]]
        config["suppress_tokens"] = []
        config["forced_decoder_ids"] = None


def _generation_config(family: str, style: TokenStyle, ids: dict[str, int], config: dict[str, Any]) -> dict:
    if family == "whisper":
        return _whisper_generation_config(ids, config)
    eos = [ids[t] for t in style.generation_eos]
    out: dict[str, Any] = {"bos_token_id": config.get("bos_token_id"),
                           "eos_token_id": eos[0] if len(eos) == 1 else eos}
    if style.pad is not None:
        out["pad_token_id"] = ids[style.pad]
    return out


def _whisper_generation_config(ids: dict[str, int], config: dict[str, Any]) -> dict[str, Any]:
    eot = ids["<|endoftext|>"]
    return {
        "begin_suppress_tokens": [eot],
        "bos_token_id": eot,
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": eot,
        "is_multilingual": True,
        "lang_to_id": {f"<|{lang}|>": ids[f"<|{lang}|>"] for lang in _WHISPER_LANGS},
        "max_initial_timestamp_index": 50,
        "max_length": config.get("max_target_positions", 448),
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "pad_token_id": eot,
        "prev_sot_token_id": ids["<|startofprev|>"],
        "return_timestamps": False,
        "suppress_tokens": [],
        "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    }


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


# --- weights ------------------------------------------------------------------------------


def _write_weights(dest: Path, family: str, seed: int, silent_ids: list[int]) -> None:
    """Instantiate the real model class from config.json and save seeded weights.

    The init std is 0.8/sqrt(hidden) rather than the config's 0.02: at 0.02 a tiny model's
    residual stream is its input embedding and greedy decoding repeats one token forever.
    Rows of `silent_ids` (special tokens) in the output projection are zero, so their logit is
    0 while ordinary tokens spread around it: the model writes varied text and never stops by
    itself (callers bound generation with max_tokens or stop strings).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, WhisperForConditionalGeneration

    config = AutoConfig.from_pretrained(dest)
    hidden = getattr(config, "d_model", None) or config.hidden_size
    config.initializer_range = config.init_std = 0.8 / math.sqrt(hidden)
    torch.manual_seed(seed)
    if family == "whisper":
        model = WhisperForConditionalGeneration(config)
    elif family == "bert":
        model = AutoModel.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
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


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
