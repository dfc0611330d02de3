"""Foundry Local's management bodies: `/foundry/list` items, status, load, unload, download.

foundry-local-sdk 0.5 validates every field of a list item (camelCase on the wire), built from
a catalog `Variant` or a cached model's manifest metadata; nothing outside this API knows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from runtime.catalog import ORT_PROVIDER_NAMES
from runtime.engines.huge_pages import HugePages
from runtime.errors import InvalidRequest

if TYPE_CHECKING:
    from runtime.catalog import Variant
    from runtime.store import CachedModel

__all__ = [
    "DownloadModel",
    "DownloadRequest",
    "Health",
    "ListItem",
    "Loaded",
    "Resident",
    "ResidentModel",
    "Status",
    "Threads",
    "TokenCount",
    "TokenCountRequest",
    "Unloaded",
    "UnloadedAll",
    "cached_list_item",
    "variant_list_item",
]

_TASKS = {
    "chat": "chat-completion",
    "embeddings": "embeddings",
    "speech": "automatic-speech-recognition",
}


class DownloadModel(msgspec.Struct, kw_only=True):
    """The SDK's model object (it sends its catalog row; only the name matters here)."""

    Name: str | None = None
    name: str | None = None
    Uri: str | None = None


class DownloadRequest(msgspec.Struct, kw_only=True):
    """`POST /openai/download`: a model id or alias, or the SDK's `{"Name": id, ...}`."""

    model: str | DownloadModel
    token: Any = None  # the SDK's hub token field: unused (the hub is read anonymously)
    IgnorePipeReport: Any = None

    def name(self) -> str:
        model = self.model
        name = (model.Name or model.name) if isinstance(model, DownloadModel) else model
        if not name:
            raise InvalidRequest(
                "'model' must be a model id or alias, or {\"Name\": id}", param="model"
            )
        return name


class TokenCountRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/chat/completions/tokenizer/encode/count`: a chat to template and count."""

    model: str
    messages: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1)]
    tools: list[dict[str, Any]] | None = None


class Health(msgspec.Struct):
    status: str
    version: str


class Threads(msgspec.Struct, kw_only=True, rename="camel"):
    """Intra-op threads: what a model loaded now gets (threads.py), and each loaded model's."""

    intra_op: int
    source: str
    loaded_models: dict[str, int]
    spinning: dict[str, bool]  # each loaded model's choice at load (threads.spinning_wanted)


class Status(msgspec.Struct, kw_only=True, rename="camel"):
    """What foundry-local-sdk 0.5 reads (camelCase), what Foundry Local's REST reference
    documents (PascalCase, the same values), and this project's additions."""

    endpoints: list[str]
    model_dir_path: str
    pipe_name: str = ""
    is_auto_registration_resolved: bool = True
    endpoints_pascal: list[str] = msgspec.field(name="Endpoints")
    model_dir_path_pascal: str = msgspec.field(name="ModelDirPath")
    pipe_name_pascal: str = msgspec.field(default="", name="PipeName")
    resolved_pascal: bool = msgspec.field(default=True, name="IsAutoRegistrationResolved")
    version: str
    pid: int
    uptime: float
    providers: list[str]
    loaded_models: list[str]
    threads: Threads
    huge_pages: HugePages  # runtime/engines/huge_pages.py


class Loaded(msgspec.Struct, kw_only=True):
    model: str
    loaded: bool
    ttl: float | None


class Unloaded(msgspec.Struct, kw_only=True):
    model: str
    unloaded: bool


class UnloadedAll(msgspec.Struct):
    unloaded: list[str]


class ResidentModel(msgspec.Struct, kw_only=True):
    """One `/foundry/ps` row; `size` is the artifact's bytes on disk."""

    model: str
    task: str
    size: int
    idle_seconds: float
    ttl: float | None
    expires_in: float | None
    active_requests: int
    loaded_at: float
    load_seconds: float


class Resident(msgspec.Struct):
    models: list[ResidentModel]


class TokenCount(msgspec.Struct, rename="camel"):
    token_count: int


class Runtime(msgspec.Struct, rename="camel"):
    device_type: str
    execution_provider: str


class ListItem(msgspec.Struct, kw_only=True, rename="camel"):
    name: str
    display_name: str
    model_type: str = "ONNX"
    provider_type: str
    uri: str
    version: str
    prompt_template: dict[str, Any] | None
    publisher: str
    task: str
    runtime: Runtime
    file_size_mb: int
    model_settings: dict[str, Any] = msgspec.field(default_factory=lambda: {"parameters": []})
    alias: str
    supports_tool_calling: bool
    license: str
    license_description: str
    parent_model_uri: str
    max_output_tokens: int | None
    min_fl_version: str = msgspec.field(default="0.0.0", name="minFLVersion")


def variant_list_item(variant: Variant) -> ListItem:
    """A catalog variant, with every field foundry-local-sdk 0.5's model requires."""
    spec = variant.spec
    source = spec.checkpoint or spec.artifact
    parent = f"hf://{source.repo}" if source is not None else variant.source_uri
    entry = variant.entry
    return ListItem(
        name=variant.id,
        display_name=entry.display_name,
        provider_type="HuggingFace" if source is not None else "OCI",
        uri=variant.source_uri,
        version=str(variant.version),
        prompt_template=dict(entry.prompt_template),
        publisher=entry.publisher,
        task=_TASKS[variant.task],
        runtime=Runtime(variant.device.upper(), ORT_PROVIDER_NAMES[variant.provider]),
        file_size_mb=max(1, round(variant.size / 1_000_000)),
        alias=variant.alias,
        supports_tool_calling=entry.supports_tool_calling,
        license=entry.license,
        license_description=entry.license_description,
        parent_model_uri=parent,
        max_output_tokens=entry.max_output_tokens,
    )


def cached_list_item(model: CachedModel) -> ListItem:
    """A cached model outside the catalog (a local build), from its manifest metadata."""
    info = model.info
    synthetic = " with random weights" if info.synthetic else ""
    return ListItem(
        name=model.model_id,
        display_name=model.model_id,
        provider_type="Local",
        uri=f"file://{model.path}",
        version=model.model_id.rpartition(":")[2] if ":" in model.model_id else "1",
        prompt_template=None,
        publisher="local",
        task=_TASKS.get(info.task, info.task),
        runtime=Runtime(
            info.device.upper(), ORT_PROVIDER_NAMES.get(info.provider, "CPUExecutionProvider")
        ),
        file_size_mb=max(1, round(model.size / 1_000_000)),
        alias=info.alias or model.model_id,
        supports_tool_calling=bool(info.tool_parser),
        license="unknown",
        license_description="a locally built model" + synthetic,
        parent_model_uri=info.source or "",
        max_output_tokens=info.context_length,
    )
