"""Status and message of any exception, for the error shapes that are not OpenAI's.

Anthropic's (`{"type": "error", "error": {...}}`) and Ollama's (`{"error": "..."}`) routes
render errors themselves (Router-level exception handlers, and in-stream errors after the
first byte); they read the same meaning from `runtime/errors.py` that `error_responses.py`
reads for OpenAI's shape. An exception outside the hierarchy is a 500, logged.
"""

from __future__ import annotations

import logging

from litestar.exceptions import HTTPException

from runtime.errors import FoundryError, TooManyRequests

__all__ = ["error_status"]

log = logging.getLogger(__name__)


def error_status(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """(HTTP status, one-line message, headers) for `exc`; unknown ones are a logged 500."""
    if isinstance(exc, FoundryError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else {}
        return exc.http_status, exc.message, headers
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), dict(exc.headers or {})
    log.error("unhandled error", exc_info=exc)
    return 500, "internal server error; see the service log", {}
