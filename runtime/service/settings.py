"""ServiceSettings: everything a running service was started with, in one frozen struct.

Built once (the launcher, from its arguments and the environment) and passed whole to
`create_app`, which hands it to the handlers that need it (`app.state.settings`). Nothing
here imports the app or the server, so every module may name the type without a cycle.
"""

from __future__ import annotations

import msgspec

__all__ = ["ServiceSettings"]


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
