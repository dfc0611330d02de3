"""The service process: bind the socket, serve the app, own the state file for its lifetime.

`python -m runtime.service.launcher` is what `foundry service start` runs detached (and what
`--foreground` becomes).
The state file is written only once uvicorn has started (socket bound, lifespan done), so a
client that finds the file can talk to the service at once; it is removed on any exit. The
API key arrives in `FOUNDRY_API_KEY`, never on the command line where `ps` would show it.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from runtime import __version__
from runtime.errors import FoundryError, ServiceStartFailed
from runtime.service.service_log import LOG_FORMAT, ServiceLog
from runtime.settings import env, env_number, keep_private

__all__ = ["build_settings", "run"]

log = logging.getLogger("runtime.service")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.service.server", description="Serve the foundry API."
    )
    parser.add_argument("--host", default=env("FOUNDRY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env_number("FOUNDRY_PORT", int) or 0)
    parser.add_argument("--max-loaded", type=int, default=None)
    parser.add_argument("--ttl", type=float, default=None)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--cors-origin", dest="cors_origins", action="append", default=[])
    parser.add_argument("--no-console", dest="console", action="store_false")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-file", default=None, help="log here, rotated while serving")
    parser.add_argument("--log-max-bytes", type=int, default=10 * 1024 * 1024)
    return parser.parse_args(argv)


def build_settings(**values: Any) -> Any:
    """A `ServiceSettings` from the values it accepts (None = keep its default)."""
    from runtime.service.server import ServiceSettings

    accepted = inspect.signature(ServiceSettings).parameters
    return ServiceSettings(**{k: v for k, v in values.items() if k in accepted and v is not None})


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


def run(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    args = _parse_args(argv)
    args.log_handler = None
    if args.log_file:
        keep_private()  # the log is 0600 however it is rotated
        args.log_handler = ServiceLog(Path(args.log_file), args.log_max_bytes)
        logging.basicConfig(level=args.log_level.upper(), handlers=[args.log_handler])
    else:
        logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    try:
        return _serve(args)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a clean shutdown
        return 0
    except FoundryError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from runtime.hardware import detect
    from runtime.service.app import create_app
    from runtime.service.security import check_bind
    from runtime.service.state import new_state, remove_state, write_state

    keep_private()
    api_key = env("FOUNDRY_API_KEY")
    check_bind(args.host, api_key, args.insecure)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    max_loaded = args.max_loaded or env_number("FOUNDRY_MAX_LOADED", int)
    ttl = args.ttl if args.ttl is not None else env_number("FOUNDRY_TTL", float)
    settings = build_settings(
        host=args.host,
        port=port,
        api_key=api_key,
        insecure=args.insecure,
        cors_origins=tuple(args.cors_origins),
        console=args.console,
        max_loaded=max_loaded,
        ttl=ttl,
    )
    state = new_state(args.host, port, __version__, api_key_set=bool(api_key))

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
    if args.log_handler is not None:  # Litestar's default LoggingConfig put a console handler there
        logging.getLogger().handlers = [args.log_handler]
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        access_log=True,
        # With a log file, uvicorn's records go to the root logger's rotating handler.
        log_config=None if args.log_file else uvicorn.config.LOGGING_CONFIG,
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
