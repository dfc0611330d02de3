"""Check an artifact before it is registered: it loads, it generates, it agrees with its source.

fp32 artifacts must reproduce transformers' greedy tokens on the source checkpoint exactly
(both sides are forced past EOS with a minimum length, so every step is compared);
quantized ones report token agreement and the largest logit difference on the same prompt.
Targets whose provider is absent here (cuda, dml, webgpu on a CPU machine) cannot load, so
their validation is skipped and says so. torch/transformers/onnxruntime-genai load inside.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import ValidationFailed
from runtime.progress import ProgressEvent, ProgressFn, silent

if TYPE_CHECKING:
    from compiler.recipe import Target, Validation
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
        return {
            "skipped": f"provider '{target.provider}' is not available on this machine; "
            "the artifact was built but not loaded",
            "runnable": False,
        }
    if task != "chat":  # embeddings / speech artifacts [media]
        from compiler.validate_media import validate_media

        return {
            **validate_media(artifact, source.path, target.precision, progress),
            "runnable": True,
        }
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
    try:
        got, logits = artifact_greedy(artifact, prompt_ids, settings.steps)
    except Exception as exc:
        raise ValidationFailed(
            f"the artifact does not load or generate in onnxruntime-genai: {exc}"
        ) from exc
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
    record = {
        "engine": "onnxruntime-genai",
        "prompt_tokens": len(prompt_ids),
        "steps": settings.steps,
        "matched_tokens": matched,
        "token_agreement": round(matched / settings.steps, 4),
        "first_divergence": divergence,
        "max_abs_logit_diff": diff,
        "exact": divergence is None,
        # a random checkpoint that repeats one token would make parity meaningless: show it
        "distinct_reference_tokens": len(set(expected)),
        "required": "exact" if target.precision == "fp32" else "report",
        "runnable": True,
    }
    progress(
        ProgressEvent(
            "validate",
            f"{matched}/{settings.steps} tokens agree, max logit diff {diff:.2g}",
            done=True,
        )
    )
    if target.precision == "fp32" and divergence is not None:
        raise ValidationFailed(
            f"fp32 artifact disagrees with transformers at greedy step {divergence} "
            f"({matched}/{settings.steps} tokens equal, max logit diff {diff:.3g}); "
            "nothing was registered",
            hint="re-run with FOUNDRY_DEBUG=1 and report the recipe and source",
        )
    return record
