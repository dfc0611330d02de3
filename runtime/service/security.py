"""Who may talk to the service: bind policy, API key, Host header (DNS rebinding), Origin
(CSRF) and CORS.

The peers' record shows where this breaks: Ollama's DNS-rebinding CVE (a web page whose
name resolves to 127.0.0.1 drives the local API), vLLM's API key that skipped routes, and
any page's simple requests (`fetch(..., {mode: "no-cors"})`, `<img src>`) that can start a
download or unload everything. So the checks run as ASGI middleware around every route
(the key on all but `/health` and the console's static files), compare the key in constant
time and never log or echo it. Pure ASGI and stdlib: the CLI imports `check_bind` without
pulling litestar in.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runtime.errors import (
    BadApiKey,
    FoundryError,
    HostNotAllowed,
    InsecureBind,
    MissingApiKey,
    OriginNotAllowed,
)

if TYPE_CHECKING:
    from litestar.config.cors import CORSConfig

__all__ = [
    "OPEN_PATHS",
    "SecurityMiddleware",
    "check_bind",
    "cors_config",
    "is_loopback",
    "is_open_path",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]

# Answered without a key: liveness probes (and Foundry Local's SDK start-up poll) need it, and
# the console's static files (the page must load to ask for the key; its API calls send it).
OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/console/",)
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: addresses no other machine can reach."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to expose an unauthenticated service to the network.

    Raises:
        InsecureBind: `host` is not loopback, no API key is set and `insecure` is False.
    """
    if is_loopback(host) or api_key or insecure:
        return
    raise InsecureBind(
        f"binding {host} exposes the service to the network without an API key",
        hint=f"foundry service start --host {host} --api-key KEY (or --insecure, at your risk)",
    )


def cors_config(origins: Iterable[str]) -> CORSConfig | None:
    """Litestar's CORS config for the configured origins; None (CORS off) when there are none."""
    allowed = [origin for origin in origins if origin]
    if not allowed:
        return None
    from litestar.config.cors import CORSConfig

    return CORSConfig(
        allow_origins=allowed,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["authorization", "x-api-key", "content-type"],
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _host_name(host_header: str) -> str:
    """`[::1]:8080` -> `::1`, `LocalHost:80` -> `localhost`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _presented_key(scope: Scope) -> str | None:
    """The key from `Authorization: Bearer K` (OpenAI clients) or `x-api-key: K` (Anthropic's)."""
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return _header(scope, b"x-api-key")


class SecurityMiddleware:
    """ASGI middleware: Host check (while bound to loopback), Origin, then the API key (when
    one is set) on every route but the open paths."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bound_host: str,
        api_key: str | None,
        cors_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.check_host = is_loopback(bound_host)
        self.allowed_hosts = LOCAL_NAMES | {_host_name(bound_host)}
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in cors_origins if o)
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                self.authorize(scope)
            except FoundryError as exc:
                await _send_error(scope, send, exc)
                return
        await self.app(scope, receive, send)

    def authorize(self, scope: Scope) -> None:
        """Raise the reason this request may not proceed, if any."""
        host = _header(scope, b"host")
        # No Host at all is an HTTP/1.0 client, not a browser: browsers always send it.
        if self.check_host and host is not None and _host_name(host) not in self.allowed_hosts:
            raise HostNotAllowed(
                f"host {host[:100]!r} is not allowed: this service answers only to localhost"
            )
        self.check_origin(scope, host)
        if self._key is None or is_open_path(str(scope.get("path", ""))):
            return
        if scope.get("method") == "OPTIONS":  # CORS preflights never carry credentials
            return
        presented = _presented_key(scope)
        if presented is None:
            raise MissingApiKey(
                "this service requires an API key: "
                "send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            )
        if not hmac.compare_digest(presented.encode("utf-8", "replace"), self._key):
            raise BadApiKey("the API key is not valid for this service")

    def check_origin(self, scope: Scope, host: str | None) -> None:
        """Refuse what a foreign web page's browser sends: an Origin that is neither loopback,
        this service's own origin nor configured, or `Sec-Fetch-Site: cross-site` without one
        (an `<img>` GET carries no Origin). Non-browser clients send neither header."""
        if is_open_path(str(scope.get("path", ""))) and scope.get("method") in ("GET", "HEAD"):
            return  # read-only open pages (liveness, the console): a link to them may work
        origin = _header(scope, b"origin")
        if origin is None:
            if (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site":
                raise OriginNotAllowed(
                    "cross-site requests are not allowed: this service answers only to "
                    "local clients and the origins given with --cors-origin"
                )
            return
        if not self.is_allowed_origin(origin.strip(), host):
            raise OriginNotAllowed(
                f"origin {origin[:100]!r} is not allowed",
                hint="foundry service start --cors-origin ORIGIN  # to allow a web app",
            )

    def is_allowed_origin(self, origin: str, host: str | None) -> bool:
        if origin.rstrip("/").lower() in self.allowed_origins:
            return True
        try:
            parts = urlsplit(origin)
            hostname = parts.hostname
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not hostname:
            return False  # "null" (sandboxed frames, file://) and anything else odd
        same_origin = host is not None and parts.netloc.lower() == host.strip().lower()
        return is_loopback(hostname) or same_origin


async def _send_error(scope: Scope, send: Any, exc: FoundryError) -> None:
    """The error in the shape of the API asked (a client parses only its own), as the app's
    handler picks it, written directly (no handler is reached)."""
    from runtime.service.errors import describe, shape_for  # litestar: once a request is refused

    log.info("refused %s %s: %s", scope.get("method", ""), scope.get("path", ""), exc.code)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps(shape_for(str(scope.get("path", "")))(describe(exc))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.http_status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
