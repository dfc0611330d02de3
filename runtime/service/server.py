"""`serve()`: run the Litestar app under uvicorn on one socket.

Port 0 means "pick a free port": the socket is bound here first and handed to uvicorn,
so the port that ends up in the state file is the one actually listening (no race).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import msgspec

from runtime.service.settings import ServiceSettings

__all__ = ["bind", "serve"]

log = logging.getLogger(__name__)


def bind(settings: ServiceSettings) -> tuple[socket.socket, ServiceSettings]:
    """Bind the listening socket; returns it and the settings with the real port."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock, msgspec.structs.replace(settings, port=sock.getsockname()[1])


def serve(
    settings: ServiceSettings, *, on_bound: Callable[[ServiceSettings], None] | None = None
) -> None:
    """Run the service until SIGINT/SIGTERM. `on_bound(settings)` runs once the port is known."""
    import uvicorn

    from runtime.service.app import create_app

    sock, settings = bind(settings)
    if on_bound is not None:
        on_bound(settings)
    config = uvicorn.Config(
        create_app(settings),
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    log.info("serving on http://%s:%d", settings.host, settings.port)
    uvicorn.Server(config).run(sockets=[sock])
