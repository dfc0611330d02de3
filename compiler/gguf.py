"""GGUF files (llama.cpp, Ollama, LM Studio) as a build source: read, dequantize, check.

A GGUF file holds already-quantized weights (Q4_1, Q8_0, Q4_K, …), its tokenizer and chat
template. The compiler cannot build from it directly, so it is dequantized once per build into
a normal fp32 checkpoint folder (config.json, model.safetensors, tokenizer, chat template) that
the build owns, and that folder is both what the backends read and the fp32 reference the
validation compares against. transformers 5 does the dequantization (`gguf_file=`, with the
`gguf` package); onnxruntime-genai 0.18's builder also takes a GGUF path but only float16/float32
ones: on SmolLM2's Q4_1 file it fails with "shape '[192, 576]' is invalid for input of size
69120" (it reshapes the quantized blocks as if they were floats), so it is not used.

Never writes to the store itself; the caller passes the folder (a store staging folder).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import NotInstalled, SourceError
from runtime.progress import ProgressEvent, ProgressFn, silent

__all__ = [
    "SUPPORTED",
    "GgufFile",
    "check_tokenizer",
    "dequantize",
    "gguf_config",
    "is_gguf",
    "read_gguf",
]

log = logging.getLogger(__name__)

# GGUF `general.architecture` -> the transformers class a recipe builds. Only architectures
# that transformers 5.24 dequantizes from GGUF *and* that recipes/ match are listed.
SUPPORTED: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
MAGIC = b"GGUF"
# llama.cpp's pre-tokenizers that split every digit apart before the GPT-2 regex
# (llama-vocab.cpp: STARCODER, REFACT, COMMAND_R, SMOLLM, CODESHELL, EXAONE, MINERVA).
# transformers 5.24 does not know them and keeps plain GPT-2 splitting: "  12" becomes
# Ġ Ġ 1 2 where llama.cpp (and SmolLM2's own tokenizer.json) give ĠĠ 1 2; over 20 kB of GPL-3
# text plus a Python file, 7,790 tokens instead of llama.cpp's 7,781.
DIGIT_SPLIT_PRE = frozenset(
    {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"}
)
# Text every tokenizer must give back unchanged (digits, code, newlines, accents, emoji).
ROUND_TRIP = "In 2024, 12 cats ate 3.5 fish.\n\tdef f(x): return x**2  # café ü 東京 🙂"


@dataclass(frozen=True)
class GgufFile:
    """What a GGUF file says about itself (its metadata; tensors stay on disk)."""

    path: Path
    architecture: str
    tensor_types: dict[str, int]  # e.g. {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    tokenizer_model: str | None  # tokenizer.ggml.model: "gpt2" (byte-level BPE), "llama" (SP)
    tokenizer_pre: str | None  # tokenizer.ggml.pre: "smollm", "llama-bpe", "qwen2", …
    tokens: list[str]
    licence: str | None

    @property
    def quantization(self) -> str:
        """`Q4_1 x 210, F32 x 61, Q8_0 x 1`: the tensor types, most frequent first."""
        return ", ".join(f"{kind} x {n}" for kind, n in self.tensor_types.items())

    def record(self) -> dict[str, Any]:
        """What build.json keeps: the source was already quantized, and how."""
        return {
            "format": "gguf",
            "file": self.path.name,
            "architecture": self.architecture,
            "tensor_types": self.tensor_types,
            "tokenizer": {"model": self.tokenizer_model, "pre": self.tokenizer_pre},
            "licence": self.licence,
        }


def is_gguf(path: Path) -> bool:
    """A file whose first four bytes are GGUF's magic (the extension alone is not trusted)."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False


def read_gguf(path: Path) -> GgufFile:
    """Read a GGUF file's metadata and check that its architecture can be built.

    Raises:
        SourceError: not a readable GGUF file, or an architecture outside `SUPPORTED`.
        NotInstalled: the `gguf` package (the [compiler] extra) is missing.
    """
    reader = _reader(path)
    architecture = _field(reader, "general.architecture") or "?"
    if architecture not in SUPPORTED:
        raise SourceError(
            f"GGUF architecture {architecture!r} of '{path.name}' is not supported; "
            f"supported: {', '.join(sorted(SUPPORTED))}",
            hint="pass the model's Hugging Face checkpoint folder instead",
        )
    counts = Counter(t.tensor_type.name for t in reader.tensors)
    return GgufFile(
        path=path,
        architecture=architecture,
        tensor_types=dict(counts.most_common()),
        tokenizer_model=_field(reader, "tokenizer.ggml.model"),
        tokenizer_pre=_field(reader, "tokenizer.ggml.pre"),
        tokens=list(_field(reader, "tokenizer.ggml.tokens") or []),
        licence=_field(reader, "general.license"),
    )


def _reader(path: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise NotInstalled(
            f"reading GGUF files needs the gguf package: {exc}",
            hint="pip install 'foundry-build[compiler]'",
        ) from None
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # the reader's failures on a damaged file are not one type
        raise SourceError(f"'{path}' is not a readable GGUF file: {exc}") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def dequantize(gguf: GgufFile, dest: Path, progress: ProgressFn = silent) -> Path:
    """Write `gguf` as an fp32 checkpoint folder in `dest` (created) and check its tokenizer.

    Raises:
        SourceError: transformers cannot load the file, or the tokenizer disagrees with it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    progress(ProgressEvent("source", f"dequantizing {gguf.path.name} ({gguf.quantization})"))
    folder, name = str(gguf.path.parent), gguf.path.name
    hf_logging.disable_progress_bar()  # our progress events say it; tqdm would garble the view
    model: Any
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise SourceError(f"transformers cannot load '{name}': {exc}") from None
    finally:
        hf_logging.enable_progress_bar()
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its
    # weights are plain fp32 tensors by now: drop the marker, then save as any checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [SUPPORTED[gguf.architecture]]
    dest.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(dest))
    finally:
        hf_logging.enable_progress_bar()
    del model
    _split_digits_like_llama_cpp(tokenizer, gguf)
    tokenizer.save_pretrained(str(dest))
    check_tokenizer(dest, gguf)
    (dest / "gguf.json").write_text(json.dumps(gguf.record(), indent=2) + "\n")
    progress(ProgressEvent("source", f"dequantized to {dest}", done=True))
    return dest


def _split_digits_like_llama_cpp(tokenizer: Any, gguf: GgufFile) -> None:
    if gguf.tokenizer_model != "gpt2" or gguf.tokenizer_pre not in DIGIT_SPLIT_PRE:
        return
    from tokenizers import Regex, pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def check_tokenizer(folder: Path, gguf: GgufFile) -> None:
    """The saved tokenizer has the GGUF's vocabulary, id for id, and round-trips text.

    Raises:
        SourceError: an id maps to another token than the GGUF's, or text does not round-trip.
    """
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))
    spell = _ByteLevel() if gguf.tokenizer_model == "gpt2" else None
    ids: list[int] = tokenizer.convert_tokens_to_ids([_spelled(t, spell) for t in gguf.tokens])
    wrong = [i for i, got in enumerate(ids) if got != i]
    if wrong or len(tokenizer) != len(gguf.tokens):
        first = wrong[0] if wrong else len(gguf.tokens)
        raise SourceError(
            f"the tokenizer read from '{gguf.path.name}' disagrees with the file: "
            f"{len(wrong)} of {len(gguf.tokens)} ids differ (first: {first}), "
            f"{len(tokenizer)} tokens"
        )
    ids = tokenizer.encode(ROUND_TRIP, add_special_tokens=False)
    if (back := tokenizer.decode(ids)) != ROUND_TRIP:
        raise SourceError(
            f"the tokenizer read from '{gguf.path.name}' does not round-trip text: {back!r}"
        )


class _ByteLevel:
    """GPT-2's byte -> printable character table, and its alphabet."""

    def __init__(self) -> None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.spelling: dict[int, str] = dict(bytes_to_unicode())
        self.alphabet = frozenset(self.spelling.values())


def _spelled(token: str, byte_level: _ByteLevel | None) -> str:
    """A GGUF token as the transformers vocabulary spells it (byte-level BPE respells bytes).

    Mirrors transformers' own GGUF reader: tokens already in the byte alphabet stay as they are.
    """
    if byte_level is None or set(token) <= byte_level.alphabet:
        return token
    return "".join(byte_level.spelling[b] for b in token.encode("utf-8"))


def gguf_config(gguf: GgufFile) -> dict[str, Any]:
    """The config.json transformers derives from the file's metadata (reads no tensors).

    Enough to pick a recipe and compute build keys, so a rebuild is a cache hit without
    dequantizing; `dequantize` writes the same config beside the weights.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(gguf.path.parent), gguf_file=gguf.path.name)
    except (ValueError, OSError, KeyError) as exc:
        raise SourceError(f"transformers cannot read '{gguf.path.name}': {exc}") from None
    config.architectures = [SUPPORTED[gguf.architecture]]
    return dict(config.to_dict())
