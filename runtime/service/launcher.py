"""The service process: bind the socket, serve the app, own the state file for its lifetime.

`python -m runtime.service.launcher` is what `foundry service start` runs detached (and what
`--foreground` becomes); the settings arrive whole in the environment (service/settings.py).
The state file is written only once uvicorn has started (socket bound, lifespan done), so a
client that finds the file can talk to the service at once; it is removed on any exit. The
API key arrives in `FOUNDRY_API_KEY`, never on the command line where `ps` would show it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

import msgspec

from runtime import __version__
from runtime.errors import FoundryError, ServiceStartFailed
from runtime.service.service_log import LOG_FORMAT, ServiceLog
from runtime.service.settings import ServiceSettings, received
from runtime.settings import keep_private

__all__ = ["run"]

log = logging.getLogger("runtime.service")


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before serving so port 0 becomes a real port we can write down.

    Raises:
        ServiceStartFailed: the address is taken or not ours to bind.
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServiceStartFailed(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def run() -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    try:
        settings = received()
        log_handler = _configure_logging(settings)
        return _serve(settings, log_handler)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a clean shutdown
        return 0
    except FoundryError as exc:
        from runtime.cli import render_error  # the CLI's one error renderer

        render_error(exc)
        return exc.exit_code


def _configure_logging(settings: ServiceSettings) -> ServiceLog | None:
    """Log to the terminal, or (detached) to the file, rotated while serving."""
    level = settings.log_level.upper()
    if not settings.log_file:
        logging.basicConfig(level=level, format=LOG_FORMAT)
        return None
    keep_private()  # the log is 0600 however it is rotated
    handler = ServiceLog(Path(settings.log_file), settings.log_max_bytes)
    logging.basicConfig(level=level, handlers=[handler])
    return handler


def _serve(settings: ServiceSettings, log_handler: ServiceLog | None) -> int:
    import uvicorn

    from runtime.hardware import detect
    from runtime.service.app import create_app
    from runtime.service.security import check_bind
    from runtime.service.state import new_state, remove_state, write_state

    keep_private()
    check_bind(settings.host, settings.api_key, settings.insecure)
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    settings = msgspec.structs.replace(settings, port=port)
    state = new_state(settings.host, port, __version__, api_key_set=bool(settings.api_key))

    class StateWritingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                write_state(state)
                log.info("serving on %s (pid %d)", state.base_url, state.pid)
                # Probe the execution providers now (onnxruntime import, ~0.3 s) rather than
                # inside the first /openai/status, which `foundry service status` waits on.
                threading.Thread(target=detect, name="detect-hardware", daemon=True).start()

    app = create_app(settings)
    if log_handler is not None:  # Litestar's default LoggingConfig put a console handler there
        logging.getLogger().handlers = [log_handler]
    # loop and http stay "auto": uvloop and httptools, which the runtime installs (not on
    # Windows for uvloop), so the event loop costs the decode threads less CPU per token.
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        access_log=True,
        # With a log file, uvicorn's records go to the root logger's rotating handler.
        log_config=None if settings.log_file else uvicorn.config.LOGGING_CONFIG,
    )
    server = StateWritingServer(config)
    try:
        server.run(sockets=[sock])
    finally:
        remove_state(os.getpid())
        sock.close()
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(run())
