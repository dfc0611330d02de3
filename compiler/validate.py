"""Check an artifact before it is registered: it loads, it generates, it agrees with its source.

fp32 artifacts must reproduce transformers' greedy tokens on the source checkpoint exactly
(both sides are forced past EOS with a minimum length, so every step is compared).
Quantized ones must generate, and are measured teacher-forced on the shipped corpus against
the fp32 model (compiler/quality.py: same top-1, mean KL divergence, perplexity ratio); a real
source below its recipe target's `quality:` floor registers nothing, a synthetic one reports
(random weights say nothing about quality).
Targets whose provider is absent here (cuda, dml, webgpu on a CPU machine) cannot load, so
their validation is skipped and says so. torch/transformers/onnxruntime-genai load inside.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.errors import ValidationFailed
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.store.validation import (
    Fp32Exact,
    Quantized,
    Skipped,
    ValidationRecord,
    encode_validation,
)

if TYPE_CHECKING:
    from compiler.recipe import QualityFloor, Target, Validation
    from compiler.source import Source

__all__ = ["is_runnable", "reference_greedy", "validate"]

log = logging.getLogger(__name__)


def is_runnable(target: Target) -> bool:
    """Whether this machine can load the artifact: CPU always; others if ORT has their provider."""
    if target.provider == "cpu":
        return True
    import onnxruntime

    wanted = {
        "cuda": "CUDAExecutionProvider",
        "dml": "DmlExecutionProvider",
        "webgpu": "WebGpuExecutionProvider",
        "qnn": "QNNExecutionProvider",
    }[target.provider]
    return wanted in onnxruntime.get_available_providers()


def model_class(task: str) -> Any:
    """The transformers class Optimum's TasksManager maps a task to (chat: AutoModelForCausalLM)."""
    from compiler.recipe import OPTIMUM_TASKS

    try:
        from optimum.exporters.tasks import TasksManager

        return TasksManager.get_model_class_for_task(OPTIMUM_TASKS[task], framework="pt")
    except ImportError:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM


def reference_greedy(source: Path, prompt_ids: list[int], steps: int) -> tuple[list[int], Any]:
    """transformers' own greedy tokens (EOS suppressed for `steps`) and its last-position logits."""
    import torch

    model = model_class("chat").from_pretrained(str(source), dtype=torch.float32)
    model.eval()
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids).logits[0, -1].float().numpy()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=steps,
            min_new_tokens=steps,
            pad_token_id=model.generation_config.pad_token_id or 0,
            num_beams=1,
        )
    return out[0, len(prompt_ids) :].tolist(), logits


def artifact_greedy(path: Path, prompt_ids: list[int], steps: int) -> tuple[list[int], Any]:
    """onnxruntime-genai's greedy tokens (EOS suppressed via min_length) and first-step logits."""
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(path))
    params = og.GeneratorParams(model)
    total = len(prompt_ids) + steps
    params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids)
    logits = np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1)
    tokens: list[int] = []
    while not generator.is_done() and len(tokens) < steps:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    del generator, model
    return tokens, logits


def validate(
    artifact: Path,
    source: Source,
    target: Target,
    settings: Validation,
    progress: ProgressFn = silent,
    *,
    task: str = "chat",
) -> dict[str, Any]:
    """The validation record stored in build.json and the manifest metadata.

    Embeddings and speech artifacts go to `compiler.validate_media` ([media]).

    Raises:
        ValidationFailed: the artifact does not load or generate, or an fp32 build's greedy
            tokens differ from transformers'.
    """
    if not is_runnable(target):
        progress(
            ProgressEvent(
                "validate", f"skipped: provider {target.provider!r} is not available here"
            )
        )
        return encode_validation(
            Skipped(
                skipped=f"provider '{target.provider}' is not available on this machine; "
                "the artifact was built but not loaded"
            )
        )
    if task != "chat":  # embeddings / speech artifacts [media]
        from compiler.validate_media import validate_media

        media = validate_media(artifact, source.path, target.precision, progress)
        return encode_validation(msgspec.convert(media, ValidationRecord))
    if target.precision == "fp32":
        return greedy_parity(artifact, source, settings, progress)
    return quantized_quality(artifact, source, target, settings, progress)


def greedy_parity(
    artifact: Path, source: Source, settings: Validation, progress: ProgressFn
) -> dict[str, Any]:
    """fp32: the artifact's greedy tokens must be transformers' own, every step."""
    import numpy as np
    from transformers import AutoTokenizer

    progress(
        ProgressEvent(
            "validate", f"greedy {settings.steps} tokens: transformers vs onnxruntime-genai"
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(str(source.path))
    prompt_ids = list(tokenizer(settings.prompt, add_special_tokens=False)["input_ids"]) or [0]
    expected, ref_logits = reference_greedy(source.path, prompt_ids, settings.steps)
    got, logits = generated(artifact, prompt_ids, settings.steps)
    matched = sum(a == b for a, b in zip(expected, got, strict=False))
    divergence = next(
        (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None
    )
    if divergence is None and len(got) != len(expected):
        divergence = min(len(got), len(expected))
    diff = (
        float(np.max(np.abs(logits[: ref_logits.shape[0]] - ref_logits)))
        if logits.size
        else float("nan")
    )
    record = Fp32Exact(
        engine="onnxruntime-genai",
        prompt_tokens=len(prompt_ids),
        steps=settings.steps,
        matched_tokens=matched,
        token_agreement=round(matched / settings.steps, 4),
        first_divergence=divergence,
        max_abs_logit_diff=diff,
        exact=divergence is None,
        # a random checkpoint that repeats one token would make parity meaningless: show it
        distinct_reference_tokens=len(set(expected)),
    )
    progress(
        ProgressEvent(
            "validate",
            f"{matched}/{settings.steps} tokens agree, max logit diff {diff:.2g}",
            done=True,
        )
    )
    if divergence is not None:
        raise ValidationFailed(
            f"fp32 artifact disagrees with transformers at greedy step {divergence} "
            f"({matched}/{settings.steps} tokens equal, max logit diff {diff:.3g}); "
            "nothing was registered",
            hint="re-run with FOUNDRY_DEBUG=1 and report the recipe and source",
        )
    return encode_validation(record)


def quantized_quality(
    artifact: Path, source: Source, target: Target, settings: Validation, progress: ProgressFn
) -> dict[str, Any]:
    """Quantized: it generates in onnxruntime-genai, and its teacher-forced quality on the corpus
    (compiler/quality.py) meets the recipe target's floor (real sources; synthetic ones report)."""
    import shutil

    from transformers import AutoTokenizer

    from compiler.quality import measure

    tokenizer = AutoTokenizer.from_pretrained(str(source.path))
    prompt_ids = list(tokenizer(settings.prompt, add_special_tokens=False)["input_ids"]) or [0]
    got, _ = generated(artifact, prompt_ids, min(settings.steps, 8))
    progress(ProgressEvent("validate", "quality on the corpus: teacher-forced vs the fp32 model"))
    scratch = artifact.parent / f"{artifact.name}.quality"
    try:
        measured = measure(artifact, source.path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    quality = measured.record()
    floor = target.quality
    # random weights (a --synthetic source, or a folder holding one) cannot be held to a floor
    enforced = floor is not None and not source.synthetic and measured.trained
    record = Quantized(
        engine="onnxruntime-genai",
        generated_tokens=len(got),
        quality=quality,
        floor=msgspec_dict(floor),
        required="floor" if enforced else "report",
    )
    progress(ProgressEvent("validate", quality_text(quality), done=True))
    if record.required == "floor" and floor is not None:
        check_floor(quality, floor, target)
    return encode_validation(record)


def generated(artifact: Path, prompt_ids: list[int], steps: int) -> tuple[list[int], Any]:
    """artifact_greedy, with a load or generation failure as ValidationFailed."""
    try:
        return artifact_greedy(artifact, prompt_ids, steps)
    except Exception as exc:
        raise ValidationFailed(
            f"the artifact does not load or generate in onnxruntime-genai: {exc}"
        ) from exc


def quality_text(quality: dict[str, Any]) -> str:
    """`top-1 93.2 %, KLD 0.012, ppl x1.01 (4044 tokens)`: the build table's figure."""
    return (
        f"top-1 {quality['top1'] * 100:.1f} %, KLD {quality['kld']:.3f}, "
        f"ppl x{quality['ppl_ratio']:.2f} ({quality['tokens']} tokens)"
    )


def check_floor(quality: dict[str, Any], floor: QualityFloor, target: Target) -> None:
    """Raise QualityBelowFloor naming the figure that missed and the setting to try instead."""
    from runtime.errors import QualityBelowFloor

    misses = []
    if floor.min_top1 is not None and quality["top1"] < floor.min_top1:
        misses.append(
            f"same top-1 {quality['top1'] * 100:.1f} % < floor {floor.min_top1 * 100:g} %"
        )
    if floor.max_kld is not None and quality["kld"] > floor.max_kld:
        misses.append(f"mean KLD {quality['kld']:.3f} > ceiling {floor.max_kld:g} nats")
    if not misses:
        return
    if target.precision == "int4":
        hint = "try --target cpu-int8, or block_size: 32 with an 8-bit lm_head in the recipe"
    else:
        hint = "try --target cpu-fp32, or block_size: 32 in the recipe's builder options"
    raise QualityBelowFloor(
        f"the {target.precision} artifact is below its recipe's quality floor: "
        f"{'; '.join(misses)} over {quality['tokens']} corpus tokens; nothing was registered",
        hint=hint,
    )


def msgspec_dict(value: Any) -> dict[str, Any] | None:
    import msgspec

    return None if value is None else msgspec.to_builtins(value)
