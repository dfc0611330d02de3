"""Backend `genai-builder`: onnxruntime-genai's model builder called directly (no Olive).

0.18's `create_model` needs the options its CLI prepares with `parse_extra_options`
(which also loads the Hugging Face config and tokenizer), so this backend does the same.
Kept beside `olive` as the lean path and as the reference Olive's overhead is measured against.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compiler.backends.base import BuilderOptions, convert_options
from runtime.errors import BackendFailed, RecipeError
from runtime.progress import ProgressEvent, ProgressFn

if TYPE_CHECKING:
    from compiler.recipe import Target
    from compiler.source import Source

__all__ = ["GenaiBuilderBackend", "refuse_known_bugs", "run_builder"]


def run_builder(
    source: Path,
    out_dir: Path,
    precision: str,
    provider: str,
    pairs: dict[str, str],
    *,
    refuse_chat_bugs: bool = True,
) -> None:
    """The builder's CLI sequence: parse KEY=VALUE options, then export.

    `refuse_chat_bugs=False` skips `refuse_known_bugs`, whose cases are the decoder-only path's
    (the whisper backend's encoder-decoder path writes its tables apart).
    """
    import json

    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    if refuse_chat_bugs:
        refuse_known_bugs(json.loads((source / "config.json").read_text()), precision, pairs)
    cache_dir = out_dir.parent / f"{out_dir.name}.builder-cache"
    extra = [f"{key}={value}" for key, value in sorted(pairs.items())]
    options = parse_extra_options(
        str(source), str(source), str(out_dir), precision, provider, str(cache_dir), extra
    )
    create_model(
        str(source), str(source), str(out_dir), precision, provider, str(cache_dir), **options
    )


class GenaiBuilderBackend:
    name: ClassVar[str] = "genai-builder"
    Options = BuilderOptions

    def run(
        self, source: Source, target: Target, out_dir: Path, progress: ProgressFn
    ) -> dict[str, Any]:
        if target.passes:
            raise RecipeError(
                "backend 'genai-builder' runs no Olive passes; use backend 'olive' for `passes:`"
            )
        options = convert_options(target.options, BuilderOptions, self.name)
        progress(
            ProgressEvent(
                "convert", f"onnxruntime-genai builder, {target.precision} for {target.provider}"
            )
        )
        refuse_known_bugs(source.config, target.precision, options.to_pairs())
        try:
            run_builder(source.path, out_dir, target.precision, target.provider, options.to_pairs())
        except Exception as exc:
            raise BackendFailed(
                f"the onnxruntime-genai builder failed: {type(exc).__name__}: {exc}"
            ) from exc
        progress(ProgressEvent("convert", "done", done=True))
        return {"backend": self.name, "builder_options": options.to_pairs()}


# Builder 0.18.0 combinations that write invalid ONNX, crash, or silently do something else
# (issue 11). Refused before the builder runs, with the setting that works instead.
# RTN's int8 last MatMul on a tied embedding is the invalid one; k_quant's (k_quant_mixed) builds
# and measured 76.0 % / KLD 0.224 on off-grid SmolLM2 (benchmarks/results/quality-sweep.jsonl).
RTN_LAST_MATMUL_INT8 = {"rtn_last"}


def refuse_known_bugs(config: dict[str, Any], precision: str, pairs: dict[str, str]) -> None:
    """Raises RecipeError for a builder option set that 0.18.0 is known to get wrong."""
    if precision not in ("int4", "int8"):
        return
    tied = (
        bool(config.get("tie_word_embeddings", False)) and pairs.get("shared_embeddings") != "false"
    )
    algo = pairs.get("algo_config", pairs.get("int4_algo_config", "default"))
    mixed = pairs.get("matmul_mixed_precision", "")
    symmetric = pairs.get("is_symmetric", "true") != "false"
    if tied and not symmetric:
        raise RecipeError(
            "builder 0.18.0 writes an invalid model for is_symmetric: false on a checkpoint with "
            "tied embeddings",
            hint="drop is_symmetric (symmetric is the default), or set shared_embeddings: false",
        )
    rtn = not algo.startswith("k_quant")
    if tied and rtn and ("last_matmul:int8" in mixed or algo in RTN_LAST_MATMUL_INT8):
        raise RecipeError(
            "builder 0.18.0 writes an invalid model for an RTN int8 last MatMul (last_matmul:int8, "
            f"algo_config {algo}) on a checkpoint with tied embeddings",
            hint="set shared_embeddings: false (an int4 embedding Gather and an int8 lm_head), "
            "or use algo_config: k_quant",
        )
    if algo.startswith("k_quant") or (algo.startswith("rtn") and not symmetric):
        odd = _odd_block_counts(config, int(pairs.get("block_size", "32")))
        if odd:
            raise RecipeError(
                f"builder 0.18.0's {algo} quantizer crashes when a MatMul's K / block_size is odd "
                f"({', '.join(odd)})",
                hint="use block_size: 32, or algo_config: default",
            )
    untied = not bool(config.get("tie_word_embeddings", False))
    if untied and "Gather" in pairs.get("op_types_to_quantize", "") and algo != "default":
        raise RecipeError(
            f"builder 0.18.0 ignores op_types_to_quantize Gather with algo_config {algo} on a "
            "checkpoint with untied embeddings (the embedding table would stay fp32)",
            hint="use algo_config: default to quantize the embedding Gather",
        )


def _odd_block_counts(config: dict[str, Any], block: int) -> list[str]:
    """`K=576 -> 9 blocks of 64` for each MatMul input width whose block count is odd."""
    widths = {
        int(config[key])
        for key in ("hidden_size", "intermediate_size")
        if isinstance(config.get(key), int)
    }
    counts = {k: -(-k // block) for k in sorted(widths)}
    return [f"K={k} -> {n} blocks of {block}" for k, n in counts.items() if n % 2]
