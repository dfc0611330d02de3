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

__all__ = ["GenaiBuilderBackend", "run_builder"]


def run_builder(
    source: Path, out_dir: Path, precision: str, provider: str, pairs: dict[str, str]
) -> None:
    """The builder's CLI sequence: parse KEY=VALUE options, then export."""
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

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
        try:
            run_builder(source.path, out_dir, target.precision, target.provider, options.to_pairs())
        except Exception as exc:
            raise BackendFailed(
                f"the onnxruntime-genai builder failed: {type(exc).__name__}: {exc}"
            ) from exc
        progress(ProgressEvent("convert", "done", done=True))
        return {"backend": self.name, "builder_options": options.to_pairs()}
