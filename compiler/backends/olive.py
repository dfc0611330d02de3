"""Backend `olive`: an Olive workflow whose first pass is the project's own builder pass.

Olive 0.13's bundled `ModelBuilder` pass is broken against onnxruntime-genai 0.18 (issue 3),
so the workflow starts with `FoundryModelBuilder` (compiler/backends/olive_pass.py), added to
Olive's package config here, then runs the passes the recipe lists (graph optimisation,
metadata, ...). Olive writes the final model and the builder's files into its output folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from compiler.backends.base import BuilderOptions, convert_options
from compiler.backends.genai_builder import refuse_known_bugs
from compiler.nbits import WeightOptions
from runtime.errors import BackendFailed
from runtime.progress import ProgressEvent, ProgressFn

if TYPE_CHECKING:
    from compiler.recipe import Target
    from compiler.source import Source

__all__ = ["OliveBackend", "OliveOptions", "package_config", "workflow_config"]

PASS_NAME = "FoundryModelBuilder"
WEIGHTS_PASS = "FoundryWeightQuantizer"
EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "qnn": "QNNExecutionProvider",
}
# Olive's own bookkeeping in its output folder; not part of the artifact.
OLIVE_RECORDS = {"footprint.json", "output_footprint.json", "run_history.txt", "model_config.json"}


class OliveOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The builder pass's options; the later passes come from the target's `passes:`.

    `weights` set: the builder writes fp32 and our weight quantizer (compiler/nbits.py) writes
    the int4/int8 MatMulNBits graph from it, with searched scales (issue 11).
    """

    builder: BuilderOptions = BuilderOptions()
    weights: WeightOptions | None = None


def package_config() -> dict[str, Any]:
    """Olive's default package config plus our pass (Olive resolves pass types through it)."""
    from olive.package_config import OlivePackageConfig

    config = json.loads(Path(OlivePackageConfig.get_default_config_path()).read_text())
    for name, module in (
        (PASS_NAME, "compiler.backends.olive_pass.FoundryModelBuilder"),
        (WEIGHTS_PASS, "compiler.backends.olive_weights_pass.FoundryWeightQuantizer"),
    ):
        config["passes"][name] = {
            "module_path": module,
            "supported_providers": ["*"],
            "supported_accelerators": ["*"],
            "supported_precisions": ["*"],
            "supported_algorithms": [],
            "supported_quantization_encodings": [],
        }
    return config


def workflow_config(
    source: Source, target: Target, options: OliveOptions, work: Path
) -> dict[str, Any]:
    """The Olive run config: HfModel in, our builder pass, then the recipe's passes, no search."""
    passes: dict[str, Any] = {
        "builder": {
            "type": PASS_NAME,
            "precision": "fp32" if options.weights else target.precision,
            "provider": target.provider,
            "extra_options": options.builder.to_pairs(),
        }
    }
    if options.weights is not None:
        passes["weights"] = {"type": WEIGHTS_PASS, "weights": msgspec.to_builtins(options.weights)}
    for index, spec in enumerate(target.passes):
        passes[f"p{index + 1}_{spec.type.lower()}"] = {"type": spec.type, **spec.config}
    accelerator = {
        "device": "cpu" if target.device == "cpu" else target.device,
        "execution_providers": [EXECUTION_PROVIDERS[target.provider]],
    }
    return {
        "input_model": {"type": "HfModel", "model_path": str(source.path)},
        "systems": {"local": {"type": "LocalSystem", "accelerators": [accelerator]}},
        "passes": passes,
        "host": "local",
        "target": "local",
        "output_dir": str(work / "output"),
        "cache_dir": str(work / "cache"),
        "log_severity_level": 2,
    }


class OliveBackend:
    name: ClassVar[str] = "olive"
    Options = OliveOptions

    def run(
        self, source: Source, target: Target, out_dir: Path, progress: ProgressFn
    ) -> dict[str, Any]:
        from olive.workflows import run as olive_run

        options = convert_options(target.options, OliveOptions, self.name)
        work = out_dir.parent / f"{out_dir.name}.olive"
        config = workflow_config(source, target, options, work)
        first = [PASS_NAME, WEIGHTS_PASS] if options.weights else [PASS_NAME]
        names = [*first, *(spec.type for spec in target.passes)]
        progress(ProgressEvent("convert", f"Olive workflow: {' -> '.join(names)}"))
        if options.weights is None:
            refuse_known_bugs(source.config, target.precision, options.builder.to_pairs())
        try:
            olive_run(config, package_config=package_config())
        except Exception as exc:
            raise BackendFailed(f"the Olive workflow failed: {type(exc).__name__}: {exc}") from exc
        produced = work / "output"
        if not (produced / "model.onnx").is_file():
            raise BackendFailed(f"the Olive workflow produced no model.onnx in {produced}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in produced.iterdir():
            if path.is_file() and path.name not in OLIVE_RECORDS:
                shutil.move(str(path), out_dir / path.name)
        shutil.rmtree(work, ignore_errors=True)
        progress(ProgressEvent("convert", "done", done=True))
        return {
            "backend": self.name,
            "olive_passes": names,
            "builder_options": options.builder.to_pairs(),
            **({"weights": msgspec.to_builtins(options.weights)} if options.weights else {}),
        }
