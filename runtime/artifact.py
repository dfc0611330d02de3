"""What a loadable artifact folder is: validation, metadata read from its files, and import.

Used by downloads (a hub folder must load before it is registered) and by
`foundry cache import` (a folder someone built elsewhere, e.g. an Olive output). Deliberately
simpler than `compiler.validate`, which needs the compiler extra: a chat or speech artifact
must load in onnxruntime-genai (chat also generates a few tokens on import), an encoder must
load in onnxruntime. Never imports compiler; onnxruntime(-genai) only inside functions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.artifact_policy import check_artifact, check_hard_links
from runtime.errors import SourceError, ValidationFailed
from runtime.names import check_model_id
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.store.metadata import ModelMetadata, template_thinks
from runtime.store.validation import LoadCheck, Skipped, encode_validation
from runtime.tools.formats import family_format

if TYPE_CHECKING:
    from runtime.catalog import Catalog
    from runtime.hardware import Hardware
    from runtime.store import CachedModel, Store

__all__ = ["artifact_thinks", "import_folder", "infer_metadata", "validate_artifact"]

# genai_config.json `model.type` -> family, where they differ (the tool format follows the family)
_FAMILIES = {"phi": "phi3"}
_GENAI_PROVIDERS = {
    "cuda": "cuda",
    "dml": "dml",
    "qnn": "qnn",
    "webgpu": "webgpu",
    "WebGPU": "webgpu",
}


def validate_artifact(
    folder: Path, task: str | None = None, *, generate_tokens: int = 0
) -> dict[str, Any]:
    """Check that a folder loads in the engine the runtime will use; optionally generate a few tokens.

    The folder is held to `artifact_policy` first: nothing reaches onnxruntime unchecked.

    Raises:
        UnsafeArtifact: the folder could make the engine load code or read outside it.
        ValidationFailed: it does not load (or generate), with the engine's reason.
    """
    check_artifact(folder)
    if (folder / "genai_config.json").is_file():
        return _validate_genai(folder, generate_tokens if task in (None, "chat") else 0)
    onnx_files = sorted(folder.glob("*.onnx"))
    if not onnx_files:
        raise ValidationFailed(f"{folder} has neither genai_config.json nor an .onnx file")
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(onnx_files[0]), providers=["CPUExecutionProvider"])
    except Exception as exc:  # the engine's own error types vary by version
        raise ValidationFailed(f"{onnx_files[0].name} does not load in onnxruntime: {exc}") from exc
    return {"loaded": True, "inputs": [i.name for i in session.get_inputs()]}


def _validate_genai(folder: Path, generate_tokens: int) -> dict[str, Any]:
    try:
        import onnxruntime_genai as og

        model = og.Model(str(folder))
        if not generate_tokens:
            return {"loaded": True}
        tokenizer = og.Tokenizer(model)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=64, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(tokenizer.encode("Hello"))
        produced: list[int] = []
        while not generator.is_done() and len(produced) < generate_tokens:
            generator.generate_next_token()
            produced.append(int(generator.get_next_tokens()[0]))
    except Exception as exc:  # onnxruntime-genai raises RuntimeError/OSError variants
        raise ValidationFailed(f"{folder.name} does not load in onnxruntime-genai: {exc}") from exc
    if not produced:
        raise ValidationFailed(f"{folder.name} loads but generated no tokens")
    return {"loaded": True, "generated_tokens": len(produced), "text": tokenizer.decode(produced)}


def artifact_thinks(folder: Path) -> bool:
    """`thinks` for a chat artifact folder, from its chat template (the one the engine loads)."""
    from runtime.engines.prompt import load_chat_template

    return template_thinks(load_chat_template(folder).source)


def infer_metadata(folder: Path) -> ModelMetadata:
    """Manifest metadata read from the folder's own files (genai_config.json, build.json, names).

    Raises:
        SourceError: the folder is missing or holds no ONNX model.
    """
    if not folder.is_dir():
        raise SourceError(f"folder {str(folder)!r} does not exist")
    genai_path = folder / "genai_config.json"
    if not genai_path.is_file():
        if not any(folder.glob("*.onnx")):
            raise SourceError(
                f"folder {str(folder)!r} has neither genai_config.json nor an .onnx file"
            )
        return ModelMetadata(
            task="embeddings",
            family="bert",
            precision=_precision(folder, {}),
            context_length=512,
            thinks=False,
        )
    try:
        genai = json.loads(genai_path.read_text())
        model = genai["model"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SourceError(f"{genai_path} is not a valid genai_config.json: {exc}") from None
    model_type = str(model.get("type", ""))
    family = _FAMILIES.get(model_type, model_type or "unknown")
    provider = _provider(model)
    build = _read_json(folder / "build.json")
    task = "speech" if family == "whisper" else "chat"
    return ModelMetadata(
        task=task,
        family=family,
        device="cpu" if provider == "cpu" else ("npu" if provider == "qnn" else "gpu"),
        provider=provider,
        precision=_precision(folder, build),
        context_length=int(
            genai.get("search", {}).get("max_length") or model.get("context_length") or 0
        ),
        tool_parser=family_format(family),
        thinks=artifact_thinks(folder) if task == "chat" else False,
    )


def import_folder(
    folder: Path,
    store: Store,
    *,
    name: str | None = None,
    progress: ProgressFn = silent,
    catalog: Catalog | None = None,
    hardware: Hardware | None = None,
) -> CachedModel:
    """Register an existing ONNX folder (bring your own build) after it loads and generates.

    `name` may be a catalog alias (the folder is registered under that alias's matching
    variant id, so the alias then resolves to it) or any model id; by default the folder's name.

    Raises:
        SourceError: not an artifact folder. InvalidName: a bad name.
        UnsafeArtifact: the folder could make an engine load code or read outside it.
        ValidationFailed: it does not load or generate here (nothing is registered).
    """
    from runtime.catalog import Catalog
    from runtime.hardware import detect

    folder = folder.expanduser().resolve()
    if folder.is_dir():  # checked even when validation is skipped: the store serves it as is
        check_artifact(folder)
        check_hard_links(folder)
    metadata = infer_metadata(folder)
    hardware = hardware or detect()
    catalog = catalog or Catalog.load()
    model_id, alias = _import_id(folder, name, metadata, catalog)
    runnable = hardware.has_provider(metadata.provider)
    target = f"{metadata.provider}-{metadata.precision}" if metadata.precision else None
    if runnable:
        progress(ProgressEvent("validate", f"loading {folder.name} in the runtime's engine"))
        checked = validate_artifact(folder, metadata.task, generate_tokens=4)
        validation = encode_validation(LoadCheck(**checked))
    else:
        reason = f"the {metadata.provider} execution provider is not available here"
        validation = encode_validation(Skipped(skipped=reason))
    metadata = msgspec.structs.replace(
        metadata,
        alias=alias,
        target=target,
        source=f"folder:{folder}",
        synthetic=False,
        runnable=runnable,
        imported=True,
        validation=validation,
    )
    return store.register(folder, model_id=model_id, metadata=metadata, progress=progress)


def _import_id(
    folder: Path, name: str | None, metadata: ModelMetadata, catalog: Catalog
) -> tuple[str, str | None]:
    """(model id, alias): a catalog alias maps to its variant with the same device and precision."""
    if name and name in {a.alias for a in catalog.aliases()}:
        variants = catalog.variants(name)
        match = next(
            (
                v
                for v in variants
                if v.provider == metadata.provider and v.precision == metadata.precision
            ),
            next((v for v in variants if v.provider == metadata.provider), variants[0]),
        )
        return match.id, name
    if name:
        return check_model_id(name), None
    return check_model_id(
        re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-.") or "imported"
    ), None


def _provider(model: dict[str, Any]) -> str:
    for section in ("decoder", "encoder", "embedding"):
        options = (model.get(section) or {}).get("session_options", {}).get("provider_options", [])
        for entry in options:
            for key in entry:
                if key in _GENAI_PROVIDERS:
                    return _GENAI_PROVIDERS[key]
    return "cpu"


def _precision(folder: Path, build: dict[str, Any]) -> str | None:
    target = str(build.get("target", ""))
    for text in (target, folder.name.lower()):
        if match := re.search(r"(int4|int8|fp16|fp32|bf16)", text):
            return match.group(1)
    graph = folder / "model.onnx"  # weights live in model.onnx.data, so the graph is small
    if graph.is_file() and graph.stat().st_size < 64 << 20:
        return "int4" if b"MatMulNBits" in graph.read_bytes() else None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
