"""Every error the service answers, described once and shaped per API.

`describe` reads an error's meaning from the hierarchy in `runtime/errors.py`; `shape_for`
picks the body a client of a path parses. One handler serves the whole app, and the same
describer renders errors inside streams (`transport.py`) and in the security middleware.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from runtime.errors import FoundryError, TooManyRequests

__all__ = [
    "EXCEPTION_HANDLERS",
    "Described",
    "anthropic_body",
    "describe",
    "ollama_body",
    "openai_body",
    "shape_for",
]

log = logging.getLogger(__name__)

# OpenAI's error type where it is not the default: invalid_request_error for a 4xx,
# server_error for a 5xx.
_OPENAI_TYPE_BY_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_CODE_BY_STATUS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}
# Where Anthropic's names differ from OpenAI's (any other 4xx is OpenAI's name, a 5xx api_error)
_ANTHROPIC_TYPE_BY_STATUS = {413: "request_too_large", 503: "overloaded_error"}


@dataclass(frozen=True)
class Described:
    """What an error means, in no API's shape yet."""

    status: int
    message: str
    type: str  # OpenAI's error type
    code: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def describe(exc: BaseException, *, request_id: str | None = None) -> Described:
    """The meaning of `exc`: Litestar's own HTTP errors (404 route, 405, 413, validation) keep
    their status; one outside the hierarchy is a 500 with a request id (the caller logs it)."""
    if isinstance(exc, FoundryError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else {}
        return Described(
            exc.http_status, exc.message, exc.openai_type, exc.code, exc.param, headers
        )
    if isinstance(exc, HTTPException):
        status = exc.status_code
        default_code = "invalid_request" if status < 500 else "internal_error"
        return Described(
            status,
            str(exc.detail),
            _openai_type(status),
            _CODE_BY_STATUS.get(status, default_code),
            _validation_param(exc),
            dict(exc.headers or {}),
        )
    where = f" (request id {request_id})" if request_id else "; see the service log"
    return Described(500, f"internal server error{where}", "server_error", "internal_error")


def _openai_type(status: int) -> str:
    default = "invalid_request_error" if status < 500 else "server_error"
    return _OPENAI_TYPE_BY_STATUS.get(status, default)


def _validation_param(exc: HTTPException) -> str | None:
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        return first.get("key") if isinstance(first, dict) else None
    return None


def openai_body(error: Described) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` (also sent inside a stream, as vLLM)."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def anthropic_body(error: Described) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`: what Anthropic's clients parse."""
    status = error.status
    kind = _ANTHROPIC_TYPE_BY_STATUS.get(status) or (
        _openai_type(status) if status < 500 else "api_error"
    )
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def ollama_body(error: Described) -> dict[str, Any]:
    """`{"error": "..."}`: what the `ollama` package raises as ResponseError."""
    return {"error": error.message}


Shape = Callable[[Described], dict[str, Any]]


def shape_for(path: str) -> Shape:
    """The error body a client of `path` parses (each client reads only its own)."""
    for prefix, shape in (("/api", ollama_body), ("/v1/messages", anthropic_body)):
        if path == prefix or path.startswith(prefix + "/"):
            return shape
    return openai_body


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The one exception handler: describe, log what is a server fault, shape by path."""
    request_id = None
    if not isinstance(exc, (FoundryError, HTTPException)):
        request_id = uuid.uuid4().hex[:16]
        log.error(
            "unhandled error on %s %s (request id %s)",
            request.method,
            request.url.path,
            request_id,
            exc_info=exc,
        )
    error = describe(exc, request_id=request_id)
    if isinstance(exc, FoundryError) and error.status >= 500:
        log.warning("%s: %s", type(exc).__name__, error.message)
    body = shape_for(request.url.path)(error)
    return Response(body, status_code=error.status, headers=error.headers or None)


# Litestar picks a handler by the exception's MRO: this one serves FoundryError and its own
# HTTPException (404 route, 405, 413, validation) too.
EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {Exception: error_response}
