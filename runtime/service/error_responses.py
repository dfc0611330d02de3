"""The three exception handlers: every error leaves as OpenAI's JSON error shape.

`{"error": {"message", "type", "param", "code"}}` with the status the error hierarchy
(`runtime/errors.py`) assigns; Litestar's own HTTP errors (404 route, 405, 413 body,
validation) keep their status; anything else is a 500 with a generic message and a
request id, and its traceback goes to the log. A 500 is a bug.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from runtime.errors import FoundryError, TooManyRequests
from runtime.service.anthropic_protocol import anthropic_error_body

__all__ = ["EXCEPTION_HANDLERS", "error_body", "error_response"]

log = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object for an exception (also sent inside a stream, as vLLM does)."""
    if isinstance(exc, FoundryError):
        return {
            "error": {
                "message": exc.message,
                "type": exc.openai_type,
                "param": exc.param,
                "code": exc.code,
            }
        }
    if isinstance(exc, HTTPException):
        param = None
        if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
            first = exc.extra[0]
            param = first.get("key") if isinstance(first, dict) else None
        status = exc.status_code
        return {
            "error": {
                "message": str(exc.detail),
                "type": _TYPE_BY_STATUS.get(status, "server_error"),
                "param": param,
                "code": _code(status),
            }
        }
    return {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }


def error_response(exc: FoundryError) -> Response[dict[str, Any]]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return Response(error_body(exc), status_code=exc.http_status, headers=headers)


def foundry_error_handler(
    _request: Request[Any, Any, Any], exc: FoundryError
) -> Response[dict[str, Any]]:
    if exc.http_status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return error_response(exc)


def http_exception_handler(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[dict[str, Any]]:
    headers = exc.headers or None
    if (body := _other_api_body(request.url.path, exc)) is not None:
        return Response(body, status_code=exc.status_code, headers=headers)
    return Response(error_body(exc), status_code=exc.status_code, headers=headers)


def _other_api_body(path: str, exc: HTTPException) -> dict[str, Any] | None:
    """An unknown path or a wrong method under Ollama's `/api` or Anthropic's `/v1/messages`
    (refused by the router, before those Routers' own handlers) in that API's shape."""
    if path == "/api" or path.startswith("/api/"):
        return {"error": str(exc.detail)}
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic_error_body(exc.status_code, str(exc.detail))
    return None


def internal_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    request_id = uuid.uuid4().hex[:16]
    log.error(
        "unhandled error on %s %s (request id %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    body = error_body(exc)
    body["error"]["message"] = f"internal server error (request id {request_id})"
    return Response(body, status_code=500)


def _code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 413: "too_large", 429: "rate_limited"}.get(
        status, "invalid_request" if status < 500 else "internal_error"
    )


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    FoundryError: foundry_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
