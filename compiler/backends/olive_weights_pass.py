"""The project's weight quantizer as an Olive pass: float builder graph in, MatMulNBits out.

Runs right after `FoundryModelBuilder` (which then builds fp32) when a recipe target sets
`options.weights` (compiler/nbits.py has the settings and why). Registered with Olive through
the package config built in `compiler/backends/olive.py`; the builder's other files (genai_config,
tokenizer) travel on in `model_attributes["additional_files"]` as the builder pass left them.
"""

from __future__ import annotations

from pathlib import Path

from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.passes import Pass
from olive.passes.pass_config import BasePassConfig, PassConfigParam

__all__ = ["FoundryWeightQuantizer"]


class FoundryWeightQuantizer(Pass):
    """Quantize the weights of a float decoder graph with compiler/weight_quant.py."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        return {
            "weights": PassConfigParam(
                type_=dict, required=True, description="compiler.nbits.WeightOptions as a dict."
            ),
        }

    @staticmethod
    def is_accelerator_agnostic(accelerator_spec: AcceleratorSpec) -> bool:
        return True

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        import msgspec

        from compiler.importance import measure_importance
        from compiler.nbits import WeightOptions, quantize_graph

        options = msgspec.convert(config.weights, type=WeightOptions)
        source = Path(model.model_path)
        folder = source.parent if source.suffix == ".onnx" else source
        out_dir = Path(output_model_path)
        if out_dir.suffix == ".onnx":
            out_dir = out_dir.parent
        activations = None
        if options.importance:
            scratch = out_dir.parent / f"{out_dir.name}.importance"
            activations = measure_importance(folder, scratch, hessian=options.gptq)
        quantize_graph(folder / "model.onnx", out_dir, options, activations)
        return ONNXModelHandler(
            out_dir, onnx_file_name="model.onnx", model_attributes=model.model_attributes
        )
