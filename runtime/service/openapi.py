"""The error bodies of /openapi.json: each route's errors in the shape its API answers.

Litestar documents a route's request body (transport.WireBody) and, for a handler that
validates, its own generic 400, which the service never answers: every error goes through
errors.py, shaped per path. So a client or a fuzzer checking conformance reads the truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from runtime.service.errors import Shape, anthropic_body, ollama_body, openai_body, shape_for
from runtime.service.transport import NDJSON, SSE, WireBody

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["ERROR_STATUSES", "answers", "document_errors", "streamed"]

_STREAMS = (SSE, NDJSON)

# Every status errors.py can render: FoundryError's (runtime/errors.py) and Litestar's own.
ERROR_STATUSES: dict[int, str] = {
    400: "Bad request: the message (and for OpenAI `param`) names the field",
    401: "Missing or wrong API key",
    403: "Refused origin or host",
    404: "Unknown model, route or stored object",
    405: "Method not allowed",
    409: "Conflict with the store's state",
    413: "Request body or upload too large",
    415: "Unsupported media type",
    429: "Too many requests (Retry-After says when to retry)",
    500: "A bug: the message carries a request id found in the service log",
    501: "An optional component is not installed",
    503: "Unavailable (the model cannot be served now)",
}

_STRING = Schema(type=OpenAPIType.STRING)
_NULLABLE = Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL])


def _object(**properties: Schema | Reference) -> Schema:
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=sorted(properties))


_SCHEMAS: dict[Shape, tuple[str, Schema]] = {  # each shape's component name and schema
    openai_body: (
        "OpenAIError",
        _object(error=_object(message=_STRING, type=_STRING, param=_NULLABLE, code=_NULLABLE)),
    ),
    anthropic_body: (
        "AnthropicError",
        _object(
            type=Schema(type=OpenAPIType.STRING, const="error"),
            error=_object(type=_STRING, message=_STRING),
        ),
    ),
    ollama_body: ("OllamaError", _object(error=_STRING)),
}


def _error_responses(path: str) -> dict[str, OpenAPIResponse | Reference]:
    ref = Reference(ref=f"#/components/schemas/{_SCHEMAS[shape_for(path)][0]}")
    body = {"application/json": OpenAPIMediaType(schema=ref)}
    return {
        str(status): OpenAPIResponse(description=text, content=body)
        for status, text in ERROR_STATUSES.items()
    }


def answers(whole: type, description: str, *text: str) -> dict[str, Any]:
    """A route decorator's `responses` and `opt`: its JSON answer is `whole`, and it may also
    answer each `text` media type (a string) or stream (its `media_type`)."""
    spec = ResponseSpec(whole, generate_examples=False, description=description)
    return {"responses": {200: spec}, "opt": {"text_answers": text}}


def streamed(whole: type, stream: str, description: str) -> dict[str, Any]:
    """A generating route's decorator arguments: a WireBody request, a `stream` answer (SSE or
    NDJSON), or the JSON `whole` when the body says `stream: false`."""
    route: dict[str, Any] = {"media_type": stream, "dto": WireBody, "return_dto": None}
    return route | answers(whole, description)


def _other_answers(ok: OpenAPIResponse | Reference | None, handler: HTTPRouteHandler) -> None:
    """A route's text answers, and a streaming route's stream (each event's schema open)."""
    if not isinstance(ok, OpenAPIResponse):
        return
    content = ok.content = ok.content or {}
    for media_type in handler.opt.get("text_answers", ()):
        content.setdefault(media_type, OpenAPIMediaType(schema=_STRING))
    if handler.media_type in _STREAMS:
        content.setdefault(str(handler.media_type), OpenAPIMediaType(schema=Schema()))


def document_errors(app: Litestar) -> OpenAPI:
    """Give every operation of `app`'s document the error responses errors.py really sends,
    for every status it can answer (and each route the answers its annotation does not say:
    a route that streams or picks its media type declares its JSON answer with `answers`)."""
    document = app.openapi_schema
    schemas = dict(_SCHEMAS.values())
    document.components.schemas = {**(document.components.schemas or {}), **schemas}
    for route in app.routes:
        item = (document.paths or {}).get(route.path_format)
        for handler in getattr(route, "route_handlers", ()):
            for method in handler.http_methods if item is not None else ():
                operation: Any = getattr(item, method.lower(), None)
                if operation is None:
                    continue
                responses = dict(operation.responses or {})
                _other_answers(responses.get(str(handler.status_code)), handler)
                responses.update(_error_responses(route.path_format))
                operation.responses = responses
    return document
