"""The model catalog: aliases, their variants per device, and where each variant comes from.

Data lives in `catalog/*.yaml` (built in) and `$FOUNDRY_HOME/catalog/*.yaml` (the user's,
which may add aliases or override built-in ones by alias). Shape of a file:

    schema: 1
    models:
      - alias: qwen2.5-0.5b                 # what users type
        name: qwen2.5-0.5b-instruct         # stem of every variant id
        display_name: Qwen2.5 0.5B Instruct
        publisher: Qwen  license: apache-2.0  license_description: ...
        task: chat  family: qwen2  supports_tool_calling: true  tool_parser: qwen
        max_output_tokens: 4096  context_length: 32768
        config: configs/qwen2.5-0.5b.json   # the real config.json (synthetic builds, offline)
        prompt_template: {system: ..., user: ..., assistant: ..., prompt: ...}
        variants:
          - {device: cpu, provider: cpu, precision: int4, size: 822000000,
             artifact: {repo: org/x-onnx, revision: main, subfolder: cpu-int4}}     # prebuilt
          - {device: gpu, provider: cuda, precision: int4, size: 800000000,
             checkpoint: {repo: Qwen/Qwen2.5-0.5B-Instruct, revision: main}}       # compiled
          - {device: cpu, provider: cpu, precision: fp32, size: 2000000000,
             registry: "oci://registry.example/team/qwen:cpu-fp32"}   # prebuilt, in an OCI registry
             # target defaults to "<provider>-<precision>" (a recipe target)

A variant id is `<name>-<device>-<precision>:<version>`, e.g. `qwen2.5-0.5b-instruct-cpu-int4:1`;
it is also the store model id of that variant once downloaded or built. Sizes are approximate
bytes on disk (used to check that a variant fits in memory and for listings).

Never imports heavy modules; hardware is detected lazily by `runtime.hardware`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from runtime.errors import CatalogError, ModelNotFound
from runtime.settings import catalog_dirs
from runtime.store.metadata import ModelMetadata

if TYPE_CHECKING:
    from runtime.hardware import Hardware

__all__ = [
    "Alias",
    "ArtifactSource",
    "Catalog",
    "CheckpointSource",
    "Variant",
    "VariantSpec",
    "catalog_schema",
    "load_catalog_file",
    "split_version",
]

Device = Literal["cpu", "gpu", "npu"]
Provider = Literal["cpu", "cuda", "dml", "qnn", "webgpu"]
Precision = Literal["int4", "int8", "fp16", "fp32"]
Task = Literal["chat", "embeddings", "speech"]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")]

# Foundry Local's names for devices and execution providers (its SDK validates them).
ORT_PROVIDER_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}


class ArtifactSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A prebuilt ONNX folder on the Hugging Face hub (e.g. Microsoft's onnxruntime-genai folders)."""

    repo: str
    revision: str = "main"
    subfolder: str = ""


class CheckpointSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A source checkpoint on the hub that the compiler turns into this variant."""

    repo: str
    revision: str = "main"


class VariantSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    device: Device
    provider: Provider
    precision: Precision
    size: Annotated[int, msgspec.Meta(ge=1)]  # approximate bytes on disk
    version: Annotated[int, msgspec.Meta(ge=1)] = 1
    name: Name | None = None  # overrides the alias's name stem (to keep two variants' ids apart)
    artifact: ArtifactSource | None = None
    checkpoint: CheckpointSource | None = None
    registry: str | None = None  # oci://HOST/REPO[:TAG|@sha256:…], what `foundry cache push` wrote
    target: str | None = None  # recipe target; default "<provider>-<precision>"

    def __post_init__(self) -> None:
        sources = (self.artifact, self.checkpoint, self.registry)
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                "a variant needs exactly one source: `artifact`, `checkpoint` or `registry`"
            )
        if self.registry is not None:
            from runtime.oci.reference import Reference

            Reference.parse(self.registry)  # InvalidReference is a ValueError: file:line follows


class Alias(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    alias: Name
    name: Name
    display_name: str
    publisher: str
    license: str
    task: Task
    family: str
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)]
    context_length: Annotated[int, msgspec.Meta(ge=1)]
    variants: Annotated[list[VariantSpec], msgspec.Meta(min_length=1)]
    license_description: str = ""
    description: str = ""
    supports_tool_calling: bool = False
    tool_parser: str | None = None
    gated: bool = False  # the hub repo needs its licence accepted and HF_TOKEN set
    config: str | None = None  # path of the real config.json, relative to the catalog folder
    prompt_template: dict[str, str] = {}


class CatalogFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema: Literal[1]
    models: list[Alias]


@dataclass(frozen=True)
class Variant:
    """One downloadable/buildable variant, with its alias's facts at hand."""

    entry: Alias
    spec: VariantSpec
    catalog_file: Path

    @property
    def alias(self) -> str:
        return self.entry.alias

    @property
    def name(self) -> str:
        return self.spec.name or self.entry.name

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def id(self) -> str:
        return f"{self.name}-{self.device}-{self.precision}:{self.version}"

    @property
    def base_id(self) -> str:
        """The id without its `:version`."""
        return self.id.rsplit(":", 1)[0]

    @property
    def device(self) -> str:
        return self.spec.device

    @property
    def provider(self) -> str:
        return self.spec.provider

    @property
    def precision(self) -> str:
        return self.spec.precision

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def task(self) -> str:
        return self.entry.task

    @property
    def target(self) -> str:
        return self.spec.target or f"{self.provider}-{self.precision}"

    @property
    def is_prebuilt(self) -> bool:
        return self.spec.artifact is not None or self.spec.registry is not None

    @property
    def source_uri(self) -> str:
        """`hf://repo@revision[/subfolder]` of the artifact or the checkpoint, or the `oci://` one."""
        if self.spec.registry is not None:
            return self.spec.registry
        if (art := self.spec.artifact) is not None:
            return f"hf://{art.repo}@{art.revision}" + (
                f"/{art.subfolder}" if art.subfolder else ""
            )
        ckpt = self.spec.checkpoint
        assert ckpt is not None
        return f"hf://{ckpt.repo}@{ckpt.revision}"

    @property
    def config_path(self) -> Path | None:
        """The real config.json of this alias, if the catalog keeps one."""
        if not self.entry.config:
            return None
        return (self.catalog_file.parent / self.entry.config).resolve()

    def metadata(self) -> ModelMetadata:
        """Manifest metadata for this variant (the keys INTERFACES.md lists)."""
        return ModelMetadata(
            task=self.task,
            family=self.entry.family,
            target=self.target,
            device=self.device,
            precision=self.precision,
            provider=self.provider,
            alias=self.alias,
            source=self.source_uri,
            tool_parser=self.entry.tool_parser,
            context_length=self.entry.context_length,
        )

    def to_json(self) -> dict[str, Any]:
        """The variant as `foundry model info --json` shows it."""
        return {
            "id": self.id,
            "alias": self.alias,
            "display_name": self.entry.display_name,
            "task": self.task,
            "family": self.entry.family,
            "device": self.device,
            "provider": self.provider,
            "precision": self.precision,
            "target": self.target,
            "size": self.size,
            "source": self.source_uri,
            "prebuilt": self.is_prebuilt,
            "publisher": self.entry.publisher,
            "license": self.entry.license,
            "license_description": self.entry.license_description,
            "supports_tool_calling": self.entry.supports_tool_calling,
            "max_output_tokens": self.entry.max_output_tokens,
            "context_length": self.entry.context_length,
        }


def split_version(model_id: str) -> tuple[str, int | None]:
    """`'x-cpu-int4:2'` -> `('x-cpu-int4', 2)`; no or non-numeric version -> None."""
    base, sep, version = model_id.rpartition(":")
    if sep and version.isdigit():
        return base, int(version)
    return model_id, None


class Catalog:
    """Aliases by name (later files override earlier ones) and every variant by id."""

    def __init__(self, aliases: dict[str, tuple[Alias, Path]]):
        self._aliases = aliases
        self._variants: dict[str, Variant] = {}
        for entry, path in aliases.values():
            for spec in entry.variants:
                variant = Variant(entry, spec, path)
                if variant.id in self._variants:
                    other = self._variants[variant.id]
                    raise CatalogError(
                        f"{path}: variant id {variant.id!r} of alias {entry.alias!r} is also "
                        f"defined by alias {other.alias!r} ({other.catalog_file})",
                        hint="give one of them its own `name:` or `version:`",
                    )
                self._variants[variant.id] = variant

    @classmethod
    def load(cls, dirs: list[Path] | None = None) -> Catalog:
        """Read every `*.yaml` in the built-in catalog folder, then the user's (`$FOUNDRY_HOME/catalog`).

        Raises:
            CatalogError: a file does not match the schema (message names file, line and field).
        """
        aliases: dict[str, tuple[Alias, Path]] = {}
        for directory in dirs if dirs is not None else catalog_dirs():
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.yaml")):
                seen: set[str] = set()
                for entry in load_catalog_file(path).models:
                    if entry.alias in seen:
                        raise CatalogError(f"{path}: alias {entry.alias!r} is defined twice")
                    seen.add(entry.alias)
                    aliases[entry.alias] = (entry, path)
        return cls(aliases)

    # --- lookups -------------------------------------------------------------------
    def aliases(self) -> list[Alias]:
        return [entry for entry, _ in self._aliases.values()]

    def alias(self, name: str) -> Alias:
        """Raises: ModelNotFound (with close matches) for an unknown alias."""
        if name not in self._aliases:
            raise self._not_found(name)
        return self._aliases[name][0]

    def variants(self, alias: str | None = None) -> list[Variant]:
        """The variants of `alias` in catalog order, or every variant."""
        if alias is None:
            return list(self._variants.values())
        entry = self.alias(alias)
        return [v for v in self._variants.values() if v.entry is entry]

    def variant(self, model_id: str) -> Variant | None:
        """The variant with this id; without `:version`, its newest version."""
        if model_id in self._variants:
            return self._variants[model_id]
        base, version = split_version(model_id)
        if version is not None:
            return None
        matches = [v for v in self._variants.values() if v.base_id == base]
        return max(matches, key=lambda v: v.version) if matches else None

    def variant_for_target(self, alias: str, target: str) -> Variant | None:
        """The variant of `alias` a build for `target` (e.g. cpu-int4) registers under."""
        return next((v for v in self.variants(alias) if v.target == target), None)

    def find(
        self, alias_or_id: str, device: str | None = None, hardware: Hardware | None = None
    ) -> tuple[Alias, Variant]:
        """An alias resolves to its best variant here; a variant id resolves to itself.

        Raises:
            ModelNotFound: neither an alias nor a variant id (lists close matches).
            ProviderUnavailable, InsufficientMemory: see `best_variant`.
        """
        if alias_or_id in self._aliases:
            return self.alias(alias_or_id), self.best_variant(alias_or_id, device, hardware)
        variant = self.variant(alias_or_id)
        if variant is None:
            raise self._not_found(alias_or_id)
        return variant.entry, variant

    def best_variant(
        self, alias: str, device: str | None = None, hardware: Hardware | None = None
    ) -> Variant:
        """NPU, then GPU, then CPU, among variants whose provider is available and that fit in memory.

        Raises:
            ModelNotFound: unknown alias, or no variant for `device`.
            ProviderUnavailable: the provider each candidate needs is missing here.
            InsufficientMemory: every runnable candidate is larger than this machine's memory.
        """
        from runtime.hardware import detect
        from runtime.placement import choose_variant

        return choose_variant(self.variants(alias), hardware or detect(), device)

    def _not_found(self, name: str) -> ModelNotFound:
        names = [*self._aliases, *(v.base_id for v in self._variants.values())]
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = (
            f"did you mean: {', '.join(close)}?"
            if close
            else "foundry model list  # shows every alias"
        )
        return ModelNotFound(f"model {name!r} is not in the catalog", hint=hint, param="model")


# --- reading files -------------------------------------------------------------------
def load_catalog_file(path: Path) -> CatalogFile:
    """Decode one catalog file.

    Raises:
        CatalogError: `<file>:<line>: <what> - at <field path>`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog file: {exc.strerror}") from exc
    try:
        return msgspec.yaml.decode(text, type=CatalogFile)
    except msgspec.ValidationError as exc:
        line = _line_of(text, str(exc))
        where = f"{path}:{line}" if line else str(path)
        raise CatalogError(f"{where}: {exc}", hint="see catalog/catalog.schema.json") from exc
    except msgspec.DecodeError as exc:
        message = " ".join(str(exc).split())
        raise CatalogError(f"{path}: not valid YAML: {message}") from exc


_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def _line_of(text: str, message: str) -> int | None:
    """The 1-based line a msgspec error path (`$.models[3].variants[0].device`) points at."""
    import yaml

    match = re.search(r"at `\$([^`]*)`", message)
    if not match:
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    for key, index in _PATH_TOKEN.findall(match.group(1)):
        node = _child(node, key, index)
        if node is None:
            return None
    field = re.search(r"unknown field `([^`]+)`", message)
    if field and isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if key_node.value == field.group(1):
                return key_node.start_mark.line + 1
    return node.start_mark.line + 1


def _child(node: Any, key: str, index: str) -> Any:
    import yaml

    if index and isinstance(node, yaml.SequenceNode):
        position = int(index)
        return node.value[position] if position < len(node.value) else None
    if key and isinstance(node, yaml.MappingNode):
        return next((value for k, value in node.value if k.value == key), None)
    return None


def catalog_schema() -> str:
    """The JSON Schema of a catalog file (`catalog/catalog.schema.json`, kept fresh by a test)."""
    import json

    return json.dumps(msgspec.json.schema(CatalogFile), indent=2, sort_keys=True) + "\n"
