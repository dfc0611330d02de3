"""Olive backend for sentence-embedding encoders (BERT, MiniLM, MPNet, XLM-R).

An Olive workflow captures the encoder's graph (`OnnxConversion` with the dynamo exporter:
the default torch exporter fails on transformers 5 with `BertModel.forward() got multiple
values for argument 'use_cache'`, issue 3), then, for `cpu-int8`, a second workflow runs
Olive's `OnnxDynamicQuantization` over it. The pooling and normalisation the model was
trained with come from its sentence-transformers files (`modules.json`,
`1_Pooling/config.json`, `sentence_bert_config.json`) and are written beside the graph
as `pooling.json`, which the runtime's `EmbeddingEngine` applies. Never validates: that is
`compiler/validate_media.py`'s job.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec

from runtime.errors import BackendFailed, RecipeError, SourceError
from runtime.progress import ProgressEvent, ProgressFn, silent

if TYPE_CHECKING:
    from compiler.recipe import Target
    from compiler.source import Source

__all__ = [
    "EncoderOptions",
    "OliveEncoderBackend",
    "PoolingConfig",
    "export_encoder",
    "read_pooling",
]

log = logging.getLogger(__name__)

# Files copied from the source next to model.onnx (whichever exist).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "config.json",
)

FFNPart = Literal["ffn_in", "ffn_out"]


class EncoderOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a recipe target may set for this backend (`options:` in recipes/embeddings.yaml)."""

    opset: int = 20
    quantization: Literal["none", "dynamic-int8"] = "none"
    per_channel: bool = True
    # Feed-forward MatMuls that stay fp32 when quantizing. Measured on all-MiniLM-L6-v2
    # (min cosine vs PyTorch, 5 sentences, per-channel QInt8): all MatMuls 0.978;
    # keeping ffn_out 0.990 (69 MB); keeping ffn_in + ffn_out 0.997 (80 MB; fp32 is 91 MB).
    keep_fp32: tuple[FFNPart, ...] = ("ffn_in", "ffn_out")
    max_length: int | None = None  # overrides sentence_bert_config.json's max_seq_length


class PoolingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`pooling.json`: how the runtime turns token states into one vector.

    `mode` is sentence-transformers' pooling mode; `matryoshka` says whether truncating the
    vector to fewer `dimensions` (then renormalising) is meaningful for this model.
    """

    mode: Literal["mean", "cls", "max", "mean_sqrt_len", "lasttoken"] = "mean"
    normalize: bool = True
    max_length: int = 512
    dimension: int = 0
    matryoshka: bool = False
    output: str = "last_hidden_state"


def read_pooling(source: Path, *, max_length: int | None = None) -> PoolingConfig:
    """The pooling a sentence-transformers checkpoint declares (mean + normalise without one)."""
    config = _read_json(source / "config.json")
    dimension = int(config.get("hidden_size") or config.get("d_model") or 0)
    limit = int(config.get("max_position_embeddings") or 512)
    if limit > 512 and config.get("model_type") in {"xlm-roberta", "roberta", "mpnet"}:
        limit -= 2  # RoBERTa-style position ids start at padding_idx + 1
    modules = _read_json(source / "modules.json") if (source / "modules.json").exists() else []
    mode, normalize = "mean", not modules  # a bare encoder: mean + normalise, like ST's default
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            pooling = _read_json(source / module.get("path", "") / "config.json")
            mode = _pooling_mode(pooling)
            dimension = int(pooling.get("word_embedding_dimension") or dimension)
        elif kind.endswith("Normalize"):
            normalize = True
    bert_config = source / "sentence_bert_config.json"
    if bert_config.exists():
        limit = min(limit, int(_read_json(bert_config).get("max_seq_length") or limit))
    readme = source / "README.md"
    matryoshka = readme.exists() and "matryoshka" in readme.read_text(errors="ignore").lower()
    return PoolingConfig(
        mode=mode,
        normalize=normalize,
        max_length=max_length or limit,
        dimension=dimension,
        matryoshka=matryoshka,
    )


def _pooling_mode(pooling: dict[str, Any]) -> Any:
    if mode := pooling.get("pooling_mode"):  # newer sentence-transformers write one string
        return {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
    for key, mode in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ):
        if pooling.get(key):
            return mode
    return "mean"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc


def _olive_run(config: dict[str, Any], what: str) -> None:
    from olive.workflows import run as olive_run

    try:
        olive_run(config)
    except Exception as exc:  # Olive raises anything; wrap at the boundary
        raise BackendFailed(f"Olive {what} failed: {type(exc).__name__}: {exc}") from exc


def _workflow(input_model: dict[str, Any], passes: dict[str, Any], out: Path) -> dict[str, Any]:
    return {
        "input_model": input_model,
        "systems": {
            "local": {
                "type": "LocalSystem",
                "accelerators": [
                    {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
                ],
            }
        },
        "host": "local",
        "target": "local",
        "passes": passes,
        "output_dir": str(out),
        "cache_dir": str(out / "olive-cache"),
        "no_artifacts": True,
        "log_severity_level": 3,
    }


def _ffn_matmuls(model_path: Path, parts: tuple[str, ...]) -> list[str]:
    """Names of the feed-forward MatMuls around each Gelu (the int8-sensitive ones)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}

    def matmul_before(name: str) -> str | None:
        node = producer.get(name)
        if node is not None and node.op_type == "Add":  # bias add between MatMul and Gelu
            node = next(
                (
                    producer[i]
                    for i in node.input
                    if producer.get(i) and producer[i].op_type == "MatMul"
                ),
                None,
            )
        return node.name if node is not None and node.op_type == "MatMul" else None

    names: list[str] = []
    for node in graph.node:
        if node.op_type == "MatMul" and "ffn_out" in parts:
            first = producer.get(node.input[0])
            if first is not None and first.op_type == "Gelu":
                names.append(node.name)
        if node.op_type == "Gelu" and "ffn_in" in parts and (name := matmul_before(node.input[0])):
            names.append(name)
    return names


def export_encoder(
    source: Path,
    out_dir: Path,
    options: EncoderOptions | None = None,
    progress: ProgressFn = silent,
) -> PoolingConfig:
    """Write model.onnx, tokenizer files and pooling.json for `source` into `out_dir`.

    Raises:
        SourceError: the checkpoint lacks a tokenizer.json (the runtime uses `tokenizers`).
        BackendFailed: Olive's conversion or quantization failed.
    """
    if not (source / "tokenizer.json").exists():
        raise SourceError(
            f"{source} has no tokenizer.json; the embeddings runtime needs a fast tokenizer"
        )
    options = options or EncoderOptions()
    pooling = read_pooling(source, max_length=options.max_length)
    work = out_dir.parent / f"{out_dir.name}.olive"
    try:
        progress(ProgressEvent("convert", "Olive OnnxConversion (dynamo exporter)"))
        hf_model = {
            "type": "HfModel",
            "model_path": str(source),
            "task": "feature-extraction",
            "load_kwargs": {"attn_implementation": "eager"},
        }
        conversion = {
            "type": "OnnxConversion",
            "target_opset": options.opset,
            "use_dynamo_exporter": True,
        }
        _olive_run(_workflow(hf_model, {"conversion": conversion}, work / "fp32"), "graph capture")
        model_path = _single_onnx(work / "fp32")
        if options.quantization == "dynamic-int8":
            progress(ProgressEvent("quantize", "Olive OnnxDynamicQuantization (int8)"))
            quantization = {
                "type": "OnnxDynamicQuantization",
                "precision": "int8",
                "quant_preprocess": False,  # keeps node names, which nodes_to_exclude refers to
                "per_channel": options.per_channel,
                "op_types_to_quantize": ["MatMul"],
                "nodes_to_exclude": _ffn_matmuls(model_path, options.keep_fp32),
            }
            onnx_model = {"type": "ONNXModel", "model_path": str(model_path)}
            _olive_run(
                _workflow(onnx_model, {"quantization": quantization}, work / "int8"), "quantization"
            )
            model_path = _single_onnx(work / "int8")
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in model_path.parent.iterdir():
            if path.name.startswith("model.onnx"):
                shutil.copy2(path, out_dir / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, out_dir / name)
    (out_dir / "pooling.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(pooling)) + b"\n"
    )
    progress(ProgressEvent("convert", "encoder exported", done=True))
    return pooling


def _single_onnx(folder: Path) -> Path:
    found = sorted(folder.rglob("model.onnx"))
    found = [p for p in found if "olive-cache" not in p.parts]
    if not found:
        raise BackendFailed(f"Olive wrote no model.onnx under {folder}")
    return found[0]


class OliveEncoderBackend:
    """Backend `olive-encoder` (compiler.backends.BACKENDS): Olive graph capture (+ int8)."""

    name: ClassVar[str] = "olive-encoder"
    Options = EncoderOptions

    def run(
        self, source: Source, target: Target, out_dir: Path, progress: ProgressFn
    ) -> dict[str, Any]:
        from compiler.backends.base import convert_options

        if target.passes:
            raise RecipeError(
                "backend 'olive-encoder' sets its own Olive passes; use options.quantization"
            )
        options = convert_options(target.options, EncoderOptions, self.name)
        pooling = export_encoder(source.path, out_dir, options, progress)
        return {
            "backend": self.name,
            "olive_passes": ["OnnxConversion"]
            + (["OnnxDynamicQuantization"] if options.quantization != "none" else []),
            "options": msgspec.to_builtins(options),
            "task": "embeddings",
            "pooling": msgspec.to_builtins(pooling),
        }
