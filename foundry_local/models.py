"""`FoundryModelInfo`: one catalog variant as the SDK shows it, built from a `/foundry/list` item."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["DeviceType", "FoundryModelInfo"]


class DeviceType(StrEnum):
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"


@dataclass(frozen=True)
class FoundryModelInfo:
    alias: str
    id: str
    version: str
    execution_provider: str
    device_type: DeviceType
    uri: str
    file_size_mb: int
    supports_tool_calling: bool
    prompt_template: dict[str, Any] | None
    provider: str
    publisher: str
    license: str
    task: str

    @classmethod
    def from_list_item(cls, item: dict[str, Any]) -> FoundryModelInfo:
        runtime = item.get("runtime") or {}
        return cls(
            alias=item["alias"],
            id=item["name"],
            version=str(item.get("version", "")),
            execution_provider=runtime.get("executionProvider", ""),
            device_type=DeviceType(str(runtime.get("deviceType", "CPU")).upper()),
            uri=item.get("uri", ""),
            file_size_mb=int(item.get("fileSizeMb") or 0),
            supports_tool_calling=bool(item.get("supportsToolCalling")),
            prompt_template=item.get("promptTemplate"),
            provider=item.get("providerType", ""),
            publisher=item.get("publisher", ""),
            license=item.get("license", ""),
            task=item.get("task", ""),
        )

    def __repr__(self) -> str:
        return (
            f"FoundryModelInfo(alias={self.alias}, id={self.id}, execution_provider={self.execution_provider},"
            f" device_type={self.device_type}, file_size={self.file_size_mb} MB, license={self.license})"
        )
