"""The project's own Olive pass: drives onnxruntime-genai 0.18's model builder inside Olive.

Olive 0.13's bundled `ModelBuilder` pass cannot drive the 0.18 builder (it patches builder
internals that moved, and calls `create_model` without `parse_extra_options`, which 0.18
requires; issue 3), so this pass does what the builder's own CLI does and hands Olive an
`ONNXModelHandler` that later passes (graph optimisation, metadata, ...) can work on.
Registered with Olive through the package config built in `compiler/backends/olive.py`.
"""

from __future__ import annotations

from pathlib import Path

from olive.hardware.accelerator import AcceleratorSpec
from olive.model import HfModelHandler, ONNXModelHandler
from olive.passes import Pass
from olive.passes.pass_config import BasePassConfig, PassConfigParam

__all__ = ["FoundryModelBuilder"]


class FoundryModelBuilder(Pass):
    """Convert a Hugging Face decoder checkpoint with onnxruntime-genai's builder (0.18 API)."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        return {
            "precision": PassConfigParam(
                type_=str, required=True, description="fp32, fp16, int8 or int4."
            ),
            "provider": PassConfigParam(
                type_=str,
                required=True,
                description="Builder execution provider: cpu, cuda, dml, webgpu.",
            ),
            "extra_options": PassConfigParam(
                type_=dict[str, str], default_value={}, description="Builder KEY=VALUE options."
            ),
        }

    @staticmethod
    def is_accelerator_agnostic(accelerator_spec: AcceleratorSpec) -> bool:
        return False

    def _run_for_config(
        self, model: HfModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        from compiler.backends.genai_builder import run_builder

        if not isinstance(model, HfModelHandler):
            raise ValueError("FoundryModelBuilder needs a Hugging Face model as input")
        out_dir = Path(output_model_path)
        out_dir.mkdir(parents=True, exist_ok=True)
        run_builder(
            Path(model.model_path),
            out_dir,
            config.precision,
            config.provider,
            dict(config.extra_options),
        )
        extras = sorted(
            str(p) for p in out_dir.iterdir() if p.name not in {"model.onnx", "model.onnx.data"}
        )
        attributes = dict(model.model_attributes or {})
        attributes["additional_files"] = extras
        return ONNXModelHandler(out_dir, onnx_file_name="model.onnx", model_attributes=attributes)
