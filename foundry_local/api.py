"""`FoundryLocalManager`: start the service, pick, download and load models, over HTTP.

It finds the service through the state file (`runtime.client.ServiceClient`), starts it with
`foundry service start` when asked to bootstrap, and speaks only the management routes
that Foundry Local's own SDK uses, so the two stay interchangeable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from foundry_local.models import DeviceType, FoundryModelInfo
from runtime.client import ServiceClient
from runtime.errors import ModelNotFound, ServiceNotRunning

__all__ = ["FoundryLocalManager"]


class FoundryLocalManager:
    """Manager for a local foundry service (same constructor and methods as Foundry Local's SDK)."""

    def __init__(
        self,
        alias_or_model_id: str | None = None,
        device: DeviceType | None = None,
        bootstrap: bool = True,
        timeout: float | None = None,
    ):
        self._timeout = timeout
        self._client: ServiceClient | None = None
        self._catalog: list[FoundryModelInfo] | None = None
        self._connect()
        if bootstrap:
            self.start_service()
            if alias_or_model_id is not None:
                self.download_model(alias_or_model_id, device=device)
                self.load_model(alias_or_model_id, device=device)

    # --- service ---------------------------------------------------------------------
    def _connect(self) -> bool:
        try:
            self._client = ServiceClient.from_state(timeout=self._timeout)
        except ServiceNotRunning:
            self._client = None
        return self._client is not None

    @property
    def _http(self) -> ServiceClient:
        if self._client is None:
            raise ServiceNotRunning(
                "the foundry service is not running", hint="FoundryLocalManager().start_service()"
            )
        return self._client

    @property
    def service_uri(self) -> str:
        return self._http.base_url

    @property
    def endpoint(self) -> str:
        """The OpenAI base URL: pass it to `openai.OpenAI(base_url=...)`."""
        return f"{self.service_uri}/v1"

    @property
    def api_key(self) -> str:
        """$FOUNDRY_API_KEY, else a placeholder: never $OPENAI_API_KEY, a cloud credential the
        local service has no business receiving."""
        return os.environ.get("FOUNDRY_API_KEY") or "OPENAI_API_KEY"

    def is_service_running(self) -> bool:
        return self._connect()

    def start_service(self) -> None:
        """Start the service unless it runs; returns once it answers."""
        if self._connect():
            return
        subprocess.run(
            [sys.executable, "-m", "runtime.cli", "service", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self._connect()

    # --- catalog -----------------------------------------------------------------------
    def list_catalog_models(self) -> list[FoundryModelInfo]:
        if self._catalog is None:
            self._catalog = [
                FoundryModelInfo.from_list_item(i) for i in self._http.get("/foundry/list")
            ]
        return self._catalog

    def refresh_catalog(self) -> None:
        self._catalog = None

    def get_model_info(
        self,
        alias_or_model_id: str,
        device: DeviceType | None = None,
        raise_on_not_found: bool = False,
    ) -> FoundryModelInfo | None:
        """The variant an id names, else the best variant of an alias (the list is sorted best first)."""
        catalog = self.list_catalog_models()
        key = alias_or_model_id.lower()
        exact = [m for m in catalog if m.id.lower() == key or m.id.lower().split(":")[0] == key]
        matches = exact or [m for m in catalog if m.alias.lower() == key]
        if device is not None:
            matches = [m for m in matches if m.device_type == DeviceType(str(device).upper())]
        if matches:
            return max(matches, key=lambda m: _version(m.id)) if exact else matches[0]
        if raise_on_not_found:
            raise ModelNotFound(
                f"model {alias_or_model_id!r} is not in the catalog", hint="foundry model list"
            )
        return None

    def _require(self, alias_or_model_id: str, device: DeviceType | None) -> FoundryModelInfo:
        info = self.get_model_info(alias_or_model_id, device=device, raise_on_not_found=True)
        assert info is not None
        return info

    # --- cache and models ----------------------------------------------------------------
    def get_cache_location(self) -> str:
        return str(self._http.get("/openai/status")["modelDirPath"])

    def _infos(self, ids: list[str]) -> list[FoundryModelInfo]:
        return [info for i in ids if (info := self.get_model_info(i)) is not None]

    def list_cached_models(self) -> list[FoundryModelInfo]:
        return self._infos(self._http.get("/openai/models"))

    def list_loaded_models(self) -> list[FoundryModelInfo]:
        return self._infos(self._http.get("/openai/loadedmodels"))

    def download_model(
        self,
        alias_or_model_id: str,
        device: DeviceType | None = None,
        token: str | None = None,
        force: bool = False,
    ) -> FoundryModelInfo:
        info = self._require(alias_or_model_id, device)
        if not force and info.id in {m.id for m in self.list_cached_models()}:
            return info
        body: dict[str, Any] = {
            "model": {
                "Name": info.id,
                "Uri": info.uri,
                "Publisher": info.publisher,
                "ProviderType": info.provider,
            },
            "token": token,
            "IgnorePipeReport": True,
        }
        final = ""
        for line in self._http.stream_lines("POST", "/openai/download", body):
            if final or line.startswith("{"):
                final += line
        result = json.loads(final) if final else {}
        if not result.get("success"):
            raise RuntimeError(
                f"download of {info.id} failed: {result.get('errorMessage', 'unknown error')}"
            )
        return info

    def load_model(
        self, alias_or_model_id: str, device: DeviceType | None = None, ttl: int = 600
    ) -> FoundryModelInfo:
        info = self._require(alias_or_model_id, device)
        self._http.get(f"/openai/load/{info.id}", ttl=ttl)
        return info

    def unload_model(
        self, alias_or_model_id: str, device: DeviceType | None = None, force: bool = False
    ) -> None:
        info = self._require(alias_or_model_id, device)
        if info.id in {m.id for m in self.list_loaded_models()}:
            self._http.get(f"/openai/unload/{info.id}", force=str(force).lower())


def _version(model_id: str) -> int:
    try:
        return int(model_id.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1
