"""The service's one transport: request bodies in (`decode_body`, `WireBody`), framed event
streams out (`framed`, one `sse` or `ndjson` frame per event)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import msgspec
from litestar import MediaType, Response
from litestar.dto import AbstractDTO, DTOConfig
from litestar.exceptions import HTTPException
from litestar.response import Stream
from litestar.typing import FieldDefinition

from runtime.errors import FoundryError, InvalidRequest
from runtime.service.errors import Described, describe, openai_body

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference, Schema

__all__ = [
    "NDJSON",
    "SSE",
    "SSE_HEADERS",
    "PlainJsonBody",
    "WireBody",
    "decode_body",
    "framed",
    "ndjson",
    "sse",
    "sse_stream",
    "whole",
]

log = logging.getLogger(__name__)

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"

T = TypeVar("T")
P = TypeVar("P")

_PATH = re.compile(r"at `\$\.?([^`]*)`")


def decode_body(raw: bytes, into: type[T]) -> T:
    """Decode a request body; bad JSON or a bad field is a 400 naming the field.

    Raises:
        InvalidRequest: with `param` set to the field path (e.g. `messages[0].role`).
    """
    try:
        return msgspec.json.decode(raw, type=into)
    except msgspec.ValidationError as exc:
        match = _PATH.search(str(exc))
        param = match.group(1) if match else None
        raise InvalidRequest(f"invalid request: {exc}", param=param or None) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec recurses per nesting level (measured: 10,000 levels)
        raise InvalidRequest("the request body is nested too deeply") from None


def whole(value: Any) -> Response[Any]:
    """A whole (non-streamed) answer from a route that may also stream.

    Litestar gives a handler's `media_type` precedence over a Stream's own, so a route that
    streams declares SSE or NDJSON, and its one-object answers say JSON here.
    """
    return Response(value, media_type=MediaType.JSON)


def sse(payload: Any, event: str | None = None) -> bytes:
    """One server-sent event (`event:` line only for APIs that name their events)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + msgspec.json.encode(payload) + b"\n\n"


def named_sse(event: tuple[str, Any]) -> bytes:
    """An `(event name, data)` pair (Anthropic's and Responses' streams) as one SSE."""
    return sse(event[1], event[0])


def ndjson(payload: Any) -> bytes:
    """One NDJSON line (Ollama's streams)."""
    return msgspec.json.encode(payload) + b"\n"


async def framed(
    events: AsyncIterator[P],
    frame: Callable[[P], bytes],
    error: Callable[[Described], bytes],
    *,
    close: Callable[[], Awaitable[None]],
    done: bytes = b"",
) -> AsyncIterator[bytes]:
    """Frame `events`; a failure becomes `error(describe(exc))`; `done` ends the stream.

    After the first byte the status line is long gone, so a failure is the API's in-stream
    error frame (vLLM's order for OpenAI: the error, then `data: [DONE]`). `close` runs however
    the stream ends: finished, failed, or the client went away (Litestar closes the iterator,
    whose `finally` cancels the engine's sequences).
    """
    try:
        async for event in events:
            yield frame(event)
    except Exception as exc:  # after the first byte, an error is a frame
        if not isinstance(exc, (FoundryError, HTTPException)):
            log.error("stream failed", exc_info=exc)
        yield error(describe(exc))
    finally:
        closer = getattr(events, "aclose", None)  # generators and engine streams have it
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
        await close()
    if done:
        yield done


def sse_stream(frames: AsyncIterator[bytes]) -> Stream:
    """`framed` events answered as an SSE stream (no caching or proxy buffering)."""
    return Stream(frames, media_type=SSE, headers=SSE_HEADERS)


def openai_sse_error(error: Described) -> bytes:
    """OpenAI's in-stream error: the error object as a data event (DONE follows)."""
    return sse(openai_body(error))


class WireBody(AbstractDTO[Any]):
    """A handler's `data: SomeStruct`, decoded by `decode_body` and documented by Litestar.

    The OpenAPI document (and the fuzzer that reads it) sees every API's real request type,
    while a bad body stays `decode_body`'s 400 naming the field in the shape of the API asked,
    never Litestar's generic "Validation failed". Use: `@post(path, dto=WireBody,
    return_dto=None)` with a `data: RequestStruct` parameter.
    """

    config: ClassVar[DTOConfig] = DTOConfig()
    _types: ClassVar[dict[str, type[Any]]] = {}

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        if field_definition.name == "data":
            cls._types[handler_id] = field_definition.annotation

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[Any, None, None]:
        yield from ()  # no DTO backend: decode_body does the work

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls._types[handler_id])
        )

    @classmethod
    def decode_raw(cls, raw: bytes, into: type[Any]) -> Any:
        """The route's decoder (a subclass may keep a route's own error wording)."""
        return decode_body(raw, into)

    def decode_bytes(self, value: bytes) -> Any:
        return self.decode_raw(value, self._types[self.asgi_connection.route_handler.handler_id])

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        return self.decode_bytes(msgspec.json.encode(value))


class PlainJsonBody(WireBody):
    """WireBody for the routes that parsed the body as plain JSON first (`/v1/embeddings`,
    Foundry's `/openai/download` and token count): any body nested too deeply for the parser
    stays "not valid JSON", as those routes always answered; an empty body is `{}`."""

    @classmethod
    def decode_raw(cls, raw: bytes, into: type[Any]) -> Any:
        try:
            value = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            raise InvalidRequest("the request body is not valid JSON") from None
        try:
            return msgspec.convert(value, type=into)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"invalid request: {exc}", param=_param(str(exc))) from None


_MISSING = re.compile(r"missing required field `([^`]*)`")


def _param(message: str) -> str | None:
    """The field a msgspec error names: its path, then the missing field under it."""
    where = _PATH.search(message)
    missing = _MISSING.search(message)
    path = where.group(1) if where else ""
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path or None
