"""Schemathesis hooks for tests/test_fuzz.py: positive bodies reach the served models.

A fuzzed `model` rarely names a served model, and a fuzzed multipart `file` is never audio,
so without help most routes would only answer 400/404 (/v1/embeddings and /v1/audio/* never
anything else). In the positive run only (FUZZ_MODE; a negative case must stay invalid, or
the "negative data rejected" check fails on a request the hook made valid), the fuzzing
phase's bodies name the model their route serves (SERVED), and an audio body carries a real
one-second WAV; the coverage phase's are left as generated (fuzzed names: the 400/404
paths). `after_call` appends `METHOD path status` per call to FUZZ_CALL_LOG, so the test
reports which cases reached a 2xx.
"""

from __future__ import annotations

import io
import math
import os
import struct
import wave
from pathlib import Path

import schemathesis

_CHAT = os.environ.get("FUZZ_CHAT_MODEL", "")
_EMBEDDING = os.environ.get("FUZZ_EMBEDDING_MODEL", "")
_SPEECH = os.environ.get("FUZZ_SPEECH_MODEL", "")
CHAT_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/chat/completions/tokenizer/encode/count",
    "/api/chat",
    "/api/generate",
    "/api/show",
)
SERVED = {
    **dict.fromkeys(CHAT_PATHS, _CHAT),
    **dict.fromkeys(("/v1/embeddings", "/api/embed", "/api/embeddings"), _EMBEDDING),
    **dict.fromkeys(("/v1/audio/transcriptions", "/v1/audio/translations"), _SPEECH),
}


def _wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A 440 Hz tone as 16-bit mono PCM WAV."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return out.getvalue()


WAV = _wav()


@schemathesis.hook
def map_body(context, body):
    """Generated bodies (before a case is made of them: a case edited afterwards is judged
    again, and any multipart file in it makes schemathesis judge it negative)."""
    model = SERVED.get(context.operation.path)
    if os.environ.get("FUZZ_MODE") != "positive" or not model or not isinstance(body, dict):
        return body
    body = {**body, "model": model}
    if context.operation.path.startswith("/v1/audio/"):
        body["file"] = WAV
    return body


@schemathesis.hook
def after_call(context, case, response):
    log = os.environ.get("FUZZ_CALL_LOG")
    if log:
        with Path(log).open("a") as out:
            out.write(f"{case.method} {case.operation.path} {response.status_code}\n")
