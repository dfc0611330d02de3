"""OpenAI's `/v1/embeddings`, `/v1/audio/transcriptions` and `/v1/audio/translations`.

Thin controllers: decode the request (`wire.py`), get the engine from the model manager (a
model serving another task is a 400 `UnsupportedTask`), run it off the event loop, shape the
answer. Uploads over `MAX_AUDIO_BYTES` or the service's `max_body_bytes` are a 413.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

from litestar import Request, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Response

from runtime.audio import decode_audio
from runtime.errors import InvalidRequest, UploadTooLarge
from runtime.manager import ModelManager
from runtime.service.apis.media import wire
from runtime.service.openapi import answers
from runtime.service.transport import PlainJsonBody

__all__ = ["MAX_AUDIO_BYTES", "ROUTES"]

MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's upload limit for audio
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request its client abandoned
T = TypeVar("T")


@post("/v1/embeddings", status_code=200, dto=PlainJsonBody, return_dto=None)
async def create_embeddings(
    data: wire.EmbeddingRequest, manager: ModelManager
) -> wire.EmbeddingList:
    inputs = data.inputs()
    engine = await manager.embeddings(data.model)
    result = await engine.aembed(inputs)
    vectors = engine.truncate_dimensions(result.vectors, data.dimensions)
    return wire.embedding_response(
        vectors,
        model=data.model,
        encoding_format=data.encoding_format,
        prompt_tokens=result.prompt_tokens,
    )


def _field(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if isinstance(value, list):  # a repeated form field: the last one wins
        value = value[-1] if value else None
    if value is None or isinstance(value, UploadFile):
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text if text != "" else None


async def _speech(
    request: Request, manager: ModelManager, data: dict[str, Any], task: str
) -> Response[Any]:
    upload = data.get("file")
    if isinstance(upload, list):
        upload = upload[0] if upload else None
    if not isinstance(upload, UploadFile):
        raise InvalidRequest(
            "'file' is required: upload the audio as a multipart file field", param="file"
        )
    model = _field(data, "model")
    if not model:
        raise InvalidRequest("'model' is required", param="model")
    response_format = _field(data, "response_format") or "json"
    if response_format not in wire.RESPONSE_FORMATS:
        raise InvalidRequest(
            f"response_format must be one of {', '.join(wire.RESPONSE_FORMATS)}, "
            f"got {response_format!r}",
            param="response_format",
        )
    temperature = _temperature(_field(data, "temperature"))
    granularities = (
        data.get("timestamp_granularities[]") or data.get("timestamp_granularities") or []
    )
    if "word" in (granularities if isinstance(granularities, list) else [granularities]):
        raise InvalidRequest(
            "word timestamps are not supported; use segment", param="timestamp_granularities"
        )
    audio = await upload.read()
    limit = min(MAX_AUDIO_BYTES, request.app.state.settings.max_body_bytes)
    if len(audio) > limit:
        raise UploadTooLarge(
            f"the audio file is {len(audio)} bytes; the limit is {limit} bytes", param="file"
        )
    # Decoding is CPU work: off the event loop, before a model is loaded for it.
    pcm = await asyncio.to_thread(decode_audio, audio, upload.filename)
    engine = await manager.speech(model)
    # Whisper's prompt names the spoken language (default English); translate writes English.
    code = engine.check_language(_field(data, "language"))
    work = engine.atranscribe(
        pcm, language=code, task=task, prompt=_field(data, "prompt"), temperature=temperature
    )
    transcript = await _while_connected(request, work)
    if transcript is None:  # nobody is left to read an answer
        return Response(content=b"", status_code=CLIENT_CLOSED_REQUEST)
    body, media_type = wire.render_transcript(transcript, response_format, task)
    return Response(content=body, media_type=media_type)


async def _while_connected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Await `work`, cancelling it (None) when the client disconnects first: a long
    transcription would otherwise decode every window for nobody."""
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job.done():
        return job.result()
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    return None


async def _disconnected(request: Request) -> None:
    """Return when the ASGI server reports the client gone (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _temperature(value: str | None) -> float:
    try:
        temperature = float(value or 0.0)
    except ValueError:
        raise InvalidRequest(
            f"temperature must be a number, got {value!r}", param="temperature"
        ) from None
    if not 0.0 <= temperature <= 1.0:
        raise InvalidRequest(
            f"temperature must be between 0 and 1, got {temperature}", param="temperature"
        )
    return temperature


Multipart = Annotated[
    dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART, schema_extra=wire.AUDIO_FORM)
]
SPEECH_ANSWERS = answers(
    wire.Transcription, "the transcript in `response_format`", *wire.TEXT_ANSWERS
)


@post("/v1/audio/transcriptions", status_code=200, **SPEECH_ANSWERS)
async def create_transcription(
    request: Request, manager: ModelManager, data: Multipart
) -> Response[Any]:
    return await _speech(request, manager, data, "transcribe")


@post("/v1/audio/translations", status_code=200, **SPEECH_ANSWERS)
async def create_translation(
    request: Request, manager: ModelManager, data: Multipart
) -> Response[Any]:
    """Whisper's translate task: any supported language in, English text out."""
    return await _speech(request, manager, data, "translate")


ROUTES = [create_embeddings, create_transcription, create_translation]
