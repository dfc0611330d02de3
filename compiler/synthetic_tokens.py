# ruff: noqa: RUF001 - DeepSeek's special tokens are spelled with fullwidth bars on purpose
"""Tokenizers for synthetic checkpoints: each family's special tokens, chat template and a BPE
trained offline on a built-in corpus (see `compiler.synthetic` for the checkpoint itself).

Every byte-level family gets Qwen2's pre-tokenizer (NFC, Qwen's split regex, byte level without
its own regex): transformers 5 rebuilds exactly that for qwen2 configs whatever tokenizer.json
says, so this keeps transformers and onnxruntime-genai on the same token ids for every family.
Whisper keeps GPT-2's byte-level split, as WhisperTokenizer rebuilds it.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import msgspec

from runtime.errors import SourceError

CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalog"


class TokenStyle(msgspec.Struct, frozen=True):
    """A family's tokenizer surface: its chat template and special tokens, by text."""

    template: str | None  # catalog/templates/<template>.jinja; None: no chat (whisper)
    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    config_bos: str | None = None  # config.json's bos_token_id (may differ from the tokenizer's)
    config_eos: tuple[str, ...] = ()  # config.json's eos_token_id; one -> int, several -> list
    config_pad: str | None = None
    generation_eos: tuple[str, ...] = ()  # generation_config.json's eos_token_id
    extra_specials: tuple[str, ...] = ()  # listed as additional_special_tokens


# fmt: off
_QWEN = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
_QWEN3 = (*_QWEN, "<tool_response>", "</tool_response>", "<think>", "</think>")
_DEEPSEEK = (
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>",
    "<｜Assistant｜>", "<think>", "</think>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>", "<｜tool▁sep｜>",
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
WHISPER_LANGS = (  # noqa: SIM905 - one line of text reads better than 99 quoted codes
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su"
).split()
_WHISPER = (
    "<|endoftext|>", "<|startoftranscript|>", *(f"<|{lang}|>" for lang in WHISPER_LANGS),
    "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
    "<|notimestamps|>",
)

STYLES: dict[str, TokenStyle] = {
    "qwen2.5": TokenStyle(
        "qwen2.5", _QWEN, eos="<|im_end|>", pad="<|endoftext|>", config_bos="<|endoftext|>",
        config_eos=("<|im_end|>",), generation_eos=("<|im_end|>", "<|endoftext|>"),
        extra_specials=_QWEN[1:14],
    ),
    "qwen3": TokenStyle(
        "qwen3", _QWEN3, eos="<|im_end|>", pad="<|endoftext|>", config_bos="<|endoftext|>",
        config_eos=("<|im_end|>",), generation_eos=("<|im_end|>", "<|endoftext|>"),
        extra_specials=_QWEN[1:14],
    ),
    "deepseek-r1-qwen": TokenStyle(
        "deepseek-r1", (*_QWEN, *_DEEPSEEK), bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
        config_bos="<｜begin▁of▁sentence｜>", config_eos=("<｜end▁of▁sentence｜>",),
        generation_eos=("<｜end▁of▁sentence｜>",),
    ),
    "deepseek-r1-llama": TokenStyle(
        "deepseek-r1", (*_LLAMA3, *_DEEPSEEK), bos="<｜begin▁of▁sentence｜>",
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
# fmt: on

# Qwen2's pre-tokenizer split (digits one by one, words with a leading non-letter, whitespace runs).
SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_WHISPER_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, only when the vocabulary has room (full size)


def chat_template(name: str) -> str:
    """A family's real chat template, from `catalog/templates/<name>.jinja`."""
    path = CATALOG_DIR / "templates" / f"{name}.jinja"
    return path.read_text(encoding="utf-8").rstrip("\n")


# Added tokens that the real Qwen2.5/Qwen3 (and DeepSeek-R1 Qwen) tokenizers mark `special: false`:
# decoders keep them in the text, which is what tool-call and <think> parsing reads.
NON_SPECIAL = frozenset(
    {
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
        "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
        "<|file_sep|>",
    }
)  # fmt: skip


def write_tokenizer(
    dest: Path, style: TokenStyle, vocab: int, max_length: int | None
) -> tuple[dict[str, int], list[int]]:
    """Train the BPE and write the tokenizer files; return the special ids and the silent ids."""
    specials = list(style.specials)
    if style.template is None and vocab >= len(specials) + 256 + _WHISPER_TIMESTAMPS + 512:
        specials += [f"<|{i * 0.02:.2f}|>" for i in range(_WHISPER_TIMESTAMPS)]
    tokenizer = train_bpe(vocab - len(specials), specials, whisper=style.template is None)
    ids = {tok: tokenizer.token_to_id(tok) for tok in specials}
    (dest / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    tok_config: dict[str, Any] = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, **flags, "special": t not in NON_SPECIAL} for t in specials
        },
        "bos_token": style.bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": style.eos,
        "errors": "replace",
        "model_max_length": max_length,
        "pad_token": style.pad,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": style.unk,
    }
    if style.template is not None:
        tok_config["chat_template"] = chat_template(style.template)
    write_json(dest / "tokenizer_config.json", tok_config)
    named = {"bos_token": style.bos, "eos_token": style.eos, "pad_token": style.pad}
    special_map: dict[str, Any] = {k: v for k, v in {**named, "unk_token": style.unk}.items() if v}
    if style.extra_specials:
        special_map["additional_special_tokens"] = list(style.extra_specials)
    write_json(dest / "special_tokens_map.json", special_map)
    return ids, silent_token_ids(tokenizer, ids)


def train_bpe(size: int, specials: list[str], *, whisper: bool = False) -> Any:
    """A byte-level BPE of exactly `size` ordinary tokens, then `specials` after them.

    Merges come from the built-in corpus; the rest of the vocabulary is filled with
    printable byte strings no merge produces, so every id in the embedding decodes to text.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, trainers
    from tokenizers import pre_tokenizers as pre

    if size < 256:
        raise SourceError(f"vocabulary too small for {len(specials)} special tokens plus 256 bytes")
    tokenizer = Tokenizer(models.BPE())
    if whisper:
        tokenizer.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre.Sequence(
            [
                pre.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
                pre.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, min_frequency=2, show_progress=False,
        initial_alphabet=sorted(pre.ByteLevel.alphabet()),  # fixed order: ids never hash-seeded
    )  # fmt: skip
    tokenizer.train_from_iterator(corpus(), trainer)
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    printable = [BYTE_CHARS[b] for b in range(0x20, 0x7F)]
    fillers = (
        "".join(chars)
        for n in itertools.count(2)
        for chars in itertools.product(printable, repeat=n)
    )
    for token in fillers:
        if len(vocab) >= size:
            break
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.add_special_tokens(
        [AddedToken(t, special=t not in NON_SPECIAL, normalized=False) for t in specials]
    )
    return tokenizer


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = (b for b in range(256) if b not in keep)
    return {b: chr(256 + i) for i, b in enumerate(extra)} | {b: chr(b) for b in keep}


BYTE_CHARS = _byte_chars()


def silent_token_ids(tokenizer: Any, special_ids: dict[str, int]) -> list[int]:
    """Special tokens, control bytes and lone bytes >= 0x7F (invalid UTF-8 alone).

    A random model should not pick them: they would end generation or print garbage.
    """
    odd = [b for b in range(0x100) if b >= 0x7F or (b < 0x20 and b not in (0x09, 0x0A))]
    lone = (tokenizer.token_to_id(BYTE_CHARS[b]) for b in odd)
    return sorted({*special_ids.values(), *(i for i in lone if i is not None)})


def corpus() -> list[str]:
    """A few hundred deterministic English sentences (plus code and JSON lines) to train on."""
    rng = random.Random(1234)
    subjects = [
        "The model",
        "A small cat",
        "My friend",
        "The service",
        "This answer",
        "Our team",
        "The weather",
        "A user",
        "The compiler",
        "Every token",
        "The assistant",
        "She",
        "He",
    ]
    verbs = [
        "writes",
        "reads",
        "builds",
        "answers",
        "finds",
        "likes",
        "explains",
        "checks",
        "returns",
        "sends",
        "computes",
        "remembers",
        "translates",
        "counts",
    ]
    objects = [
        "a short story",
        "the question",
        "three numbers",
        "the weather in Paris",
        "a JSON object",
        "the function call",
        "every sentence",
        "a list of cities",
        "the temperature",
        "a helpful reply",
        "the first token",
        "some Python code",
    ]
    tails = [
        "today.",
        "quickly.",
        "for the user.",
        "in the morning.",
        "without errors.",
        "again and again.",
        "with care.",
        "on the local machine.",
        "before noon.",
        ".",
    ]
    lines = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
        for _ in range(300)
    ]
    lines += [
        "Hello! How can I help you today?",
        "What is the capital of France? Paris is the capital.",
        "Please think step by step and give the final answer.",
        "1 + 2 = 3, 10 * 7 = 70, 99 - 1 = 98.",
        "def add(a, b):\n    return a + b\n",
        "for i in range(10):\n    print(i)\n",
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
        '{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}',
        "The quick brown fox jumps over the lazy dog.",
        "Summarize the text in one sentence.",
    ] * 5
    return lines  # fmt: skip


def write_wordpiece(dest: Path, vocab: int) -> int:
    """BERT's tokenizer files (tokenizer.json, vocab.txt, configs); returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(_wordpiece_vocab(specials, vocab), unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    (dest / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    words = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (dest / "vocab.txt").write_text("".join(w + "\n" for w, _ in words), encoding="utf-8")
    roles = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    named = dict(zip(roles, specials, strict=True))
    write_json(
        dest / "tokenizer_config.json",
        {
            **named,
            "do_lower_case": True,
            "model_max_length": 512,
            "tokenizer_class": "BertTokenizer",
        },
    )
    write_json(dest / "special_tokens_map.json", named)
    return tokenizer.get_vocab_size()


def _wordpiece_vocab(specials: list[str], size: int) -> dict[str, int]:
    """Specials, every corpus character (alone and as '##' suffix), then the commonest words.

    Built by counting rather than with WordPieceTrainer, whose output changes from run to run.
    """
    words = collections.Counter(
        w for line in corpus() for w in re.findall(r"\w+|[^\w\s]", line.lower())
    )
    chars = sorted({ch for w in words for ch in w})
    tokens = [*specials, *chars, *(f"##{ch}" for ch in chars)]
    ranked = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    tokens += ranked[: max(0, size - len(tokens))]
    return {tok: i for i, tok in enumerate(tokens)}


def write_json(path: Path, data: Any) -> None:
    """Stable JSON (same data -> same bytes): indent 2, UTF-8, trailing newline."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
