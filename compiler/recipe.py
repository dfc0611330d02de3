"""Recipes as data: which backend builds which architecture for which target.

A recipe file (`recipes/*.yaml`, one per model family and task) reads:

    schema: 1
    name: qwen2
    family: qwen2
    tool_parser: qwen                 # how the runtime parses tool calls (None: no tools)
    match: {architectures: [Qwen2ForCausalLM], task: chat}
    source_files: ["*.json", "*.safetensors", ...]   # what a hub download fetches
    targets:
      cpu-int4:
        device: cpu
        precision: int4
        provider: cpu
        backend: olive               # a key of compiler.backends.BACKENDS
        options: {...}               # free here; the backend's own Options struct checks it

Picking a recipe is a lookup on `config.json`'s architectures and the task; the build
key hashes only the *resolved* target section. Never imports heavy modules.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from runtime.errors import RecipeError, RecipeNotFound, UnknownTarget
from runtime.settings import REPO_ROOT

__all__ = [
    "OPTIMUM_TASKS",
    "Match",
    "PassSpec",
    "QualityFloor",
    "Recipe",
    "RecipeFile",
    "Target",
    "Validation",
    "load_recipes",
    "optimum_tasks",
    "pick",
    "recipes_dir",
    "schema_json",
    "write_schema",
]

Task = Literal["chat", "embeddings", "speech"]


class Match(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The lookup key: `config.json`'s `architectures[0]` and the task it serves."""

    architectures: list[str]
    task: Task


class PassSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An Olive pass that runs after the backend's own first pass: its Olive type and config."""

    type: str
    config: dict[str, Any] = {}


class QualityFloor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The least a quantized build of a real checkpoint must score on the corpus (compiler/quality.py).

    `min_top1`: same next token as the fp32 model (0..1); `max_kld`: mean KL divergence in nats.
    """

    min_top1: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_kld: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One way to build: device + precision + execution provider, and the backend that does it.

    `options` is free here: the backend's own `Options` struct checks it (`msgspec.convert`).
    `passes` are the Olive passes after the first; backends outside Olive refuse them.
    `quality` is the floor a quantized chat build of real weights must meet (None: report only).
    """

    device: Literal["cpu", "gpu", "npu"]
    precision: Literal["int4", "int8", "fp16", "bf16", "fp32"]
    provider: Literal["cpu", "cuda", "dml", "webgpu", "qnn"]
    backend: str
    options: dict[str, Any] = {}
    passes: list[PassSpec] = []
    quality: QualityFloor | None = None


class Validation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The fixed check before registration: greedy steps on a fixed prompt."""

    prompt: str = "The quick brown fox jumps over the lazy dog. Once upon a time"
    steps: Annotated[int, msgspec.Meta(ge=1, le=512)] = 32


class Recipe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One YAML file under recipes/."""

    schema: Literal[1]
    name: str
    family: str
    match: Match
    targets: dict[str, Target]
    tool_parser: str | None = None
    description: str = ""
    source_files: list[str] = msgspec.field(
        default_factory=lambda: [
            "*.json",
            "*.safetensors",
            "*.jinja",
            "*.model",
            "*.txt",
            "*.tiktoken",
        ]
    )
    validation: Validation = Validation()


@dataclass(frozen=True)
class RecipeFile:
    """A recipe with where it came from (for errors) and its digest (for build.json)."""

    path: Path
    recipe: Recipe
    digest: str


def recipes_dir() -> Path:
    return REPO_ROOT / "recipes"


def load_recipe(path: Path) -> RecipeFile:
    """Decode one file; a typo or a wrong type names the file and the field.

    Raises:
        RecipeError: `recipes/qwen2.yaml: Expected `str`, got `int` - at `$.targets...``
    """
    data = path.read_bytes()
    try:
        recipe = msgspec.yaml.decode(data, type=Recipe)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RecipeError(
            f"{_shown(path)}: {_name_target(data, exc)}",
            hint="fix the file; recipes/recipe.schema.json has the schema",
        ) from None
    for name in recipe.targets:
        if not name or "/" in name:
            raise RecipeError(f"{_shown(path)}: invalid target name {name!r} - at `$.targets`")
    return RecipeFile(path, recipe, f"sha256:{hashlib.sha256(data).hexdigest()}")


def load_recipes(folder: Path | None = None) -> list[RecipeFile]:
    """Every `*.yaml` recipe, sorted by file name (the schema file is JSON, not a recipe)."""
    folder = folder or recipes_dir()
    return [load_recipe(path) for path in sorted(folder.glob("*.yaml"))]


def pick(
    config: dict[str, Any],
    task: str | None,
    target: str,
    recipes: list[RecipeFile] | None = None,
) -> tuple[RecipeFile, str, Target]:
    """The recipe for a checkpoint's architecture (and task), and its named target.

    Raises:
        RecipeNotFound: no recipe matches the architecture; the message lists supported ones.
        UnknownTarget: the recipe has no such target; the message lists its targets.
    """
    recipes = load_recipes() if recipes is None else recipes
    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else config.get("model_type", "<none>")
    candidates = [
        r
        for r in recipes
        if arch in r.recipe.match.architectures and task in (None, r.recipe.match.task)
    ]
    if not candidates:
        supported = sorted({a for r in recipes for a in r.recipe.match.architectures})
        what = f"architecture {arch!r}" + (f" and task {task!r}" if task else "")
        model_type = str(config.get("model_type", ""))
        known = [t for t in optimum_tasks(model_type, arch) if t in OPTIMUM_TASKS.values()]
        serves = f" (a {'/'.join(known)} model per Optimum)" if known else ""
        raise RecipeNotFound(
            f"no recipe for {what}{serves}; supported: {', '.join(supported)}",
            hint="foundry-build recipes  # lists families, tasks and targets",
        )
    chosen = candidates[0]
    if target not in chosen.recipe.targets:
        raise UnknownTarget(
            f"recipe {chosen.recipe.name!r} has no target {target!r}; "
            f"targets: {', '.join(chosen.recipe.targets)}",
            hint=f"foundry-build MODEL --target {next(iter(chosen.recipe.targets))}",
            param="target",
        )
    return chosen, target, chosen.recipe.targets[target]


# Optimum's task names for our tasks (its TasksManager maps model types to tasks and classes).
OPTIMUM_TASKS = {
    "chat": "text-generation",
    "embeddings": "feature-extraction",
    "speech": "automatic-speech-recognition",
}


def optimum_tasks(model_type: str, architecture: str) -> list[str]:
    """Tasks Optimum's TasksManager maps this model type + class to ([] without Optimum).

    optimum-onnx cannot be imported with transformers 5, so Optimum's part is its core
    TasksManager (issue 3): it names what a checkpoint is for when no recipe matches it.
    """
    if not model_type:
        return []
    try:
        from optimum.exporters.tasks import TasksManager
    except ImportError:
        return []
    found = []
    for task, mapping in TasksManager._TRANSFORMERS_TASKS_TO_MODEL_MAPPINGS.items():
        classes = mapping.get(model_type, ())
        if architecture in ((classes,) if isinstance(classes, str) else tuple(classes)):
            found.append(task)
    return sorted(found)


def _name_target(data: bytes, exc: Exception) -> str:
    """msgspec shows a dict key as `[...]`; name the target the error is in instead."""
    message = str(exc)
    if "$.targets[...]" not in message:
        return message
    try:
        targets = msgspec.yaml.decode(data).get("targets") or {}
    except Exception:
        return message
    for name, section in targets.items():
        try:
            msgspec.convert(section, type=Target)
        except msgspec.ValidationError as inner:
            text = str(inner).replace("- at `$", f"- at `$.targets.{name}", 1)
            return text if "- at `" in text else f"{text} - at `$.targets.{name}`"
    return message


def schema_json() -> bytes:
    """The JSON Schema of a recipe file (recipes/recipe.schema.json; a test keeps it fresh).

    Regenerate: python -c "import compiler.recipe as r; r.write_schema()"
    """
    schema = _clean_descriptions(msgspec.json.schema(Recipe))
    return msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"


def _clean_descriptions(node: Any) -> Any:
    """Descriptions dedented here, not by msgspec (0.23 changed how it renders docstrings).

    The committed schema must not depend on a library's formatting, only on the structs.
    """
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v)
            if k == "description" and isinstance(v, str)
            else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def write_schema() -> Path:
    path = recipes_dir() / "recipe.schema.json"
    path.write_bytes(schema_json())
    return path


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
