"""ServiceSettings: everything a running service was started with, in one frozen struct.

`foundry service start` builds it (`settings_from`) and hands it whole to the server process
as JSON in `FOUNDRY_SERVICE_SETTINGS`, the API key apart in `FOUNDRY_API_KEY` (the environment,
never the command line, where `ps` would show it). Nothing here imports the app or the
launcher, so every module may name the type without a cycle.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from runtime.settings import env, env_number

__all__ = ["SETTINGS_ENV", "ServiceSettings", "launch_environment", "received", "settings_from"]

SETTINGS_ENV = "FOUNDRY_SERVICE_SETTINGS"


class ServiceSettings(msgspec.Struct, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    max_loaded: int = 2
    ttl: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024
    queue_size: int = 64
    insecure: bool = False
    cors_origins: tuple[str, ...] = ()
    console: bool = True  # the web console at `/` (`--no-console` turns it off)
    log_level: str = "warning"
    log_file: str | None = None  # detached: log here, rotated while serving (service_log.py)
    log_max_bytes: int = 10 * 1024 * 1024


def settings_from(**values: Any) -> ServiceSettings:
    """Settings from explicit values (None = not given) over FOUNDRY_HOST, FOUNDRY_PORT,
    FOUNDRY_API_KEY, FOUNDRY_MAX_LOADED and FOUNDRY_TTL, over the defaults.

    Raises:
        InvalidRequest: a FOUNDRY_* number that is not one (names the variable).
    """
    from_env = {
        "host": env("FOUNDRY_HOST"),
        "port": env_number("FOUNDRY_PORT", int),
        "api_key": env("FOUNDRY_API_KEY"),
        "max_loaded": env_number("FOUNDRY_MAX_LOADED", int),
        "ttl": env_number("FOUNDRY_TTL", float),
    }
    given = {k: v for k, v in values.items() if v is not None}
    merged = {k: v for k, v in from_env.items() if v is not None} | given
    if "cors_origins" in merged:
        merged["cors_origins"] = tuple(merged["cors_origins"])
    return ServiceSettings(**merged)


def launch_environment(settings: ServiceSettings) -> dict[str, str]:
    """The server process's environment: this one, plus the settings (key apart), with its
    malloc asking for huge pages (runtime/engines/huge_pages.py: read only at exec)."""
    from runtime.engines.huge_pages import with_huge_pages

    child = with_huge_pages(os.environ)
    child[SETTINGS_ENV] = msgspec.json.encode(
        msgspec.structs.replace(settings, api_key=None)
    ).decode()
    if settings.api_key:
        child["FOUNDRY_API_KEY"] = settings.api_key
    return child


def received() -> ServiceSettings:
    """In the server process: the settings the CLI sent (or, run by hand, the environment's)."""
    sent = os.environ.get(SETTINGS_ENV)
    if not sent:
        return settings_from(log_level="info")
    settings = msgspec.json.decode(sent, type=ServiceSettings)
    return msgspec.structs.replace(settings, api_key=env("FOUNDRY_API_KEY"))
