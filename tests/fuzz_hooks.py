"""Schemathesis hooks for tests/test_fuzz.py: positive cases on the media routes reach a model.

A fuzzed `model` never names a served model, and a fuzzed multipart `file` is never audio, so
without help /v1/embeddings and /v1/audio/* would only answer 400/404. In the positive run
only (FUZZ_MODE; a negative case must stay invalid, or the "negative data rejected" check
fails on a request the hook made valid), the fuzzing phase's bodies on those routes name the
served model, and an audio body carries a real one-second WAV (the coverage phase's are left
as generated: fuzzed names, the 400/404 paths). `after_call` appends `METHOD path status` per call to
FUZZ_CALL_LOG, so the test reports which cases reached a 2xx.
"""

from __future__ import annotations

import io
import math
import os
import struct
import wave
from pathlib import Path

import schemathesis

SERVED = {
    "/v1/embeddings": os.environ.get("FUZZ_EMBEDDING_MODEL", ""),
    "/v1/audio/transcriptions": os.environ.get("FUZZ_SPEECH_MODEL", ""),
    "/v1/audio/translations": os.environ.get("FUZZ_SPEECH_MODEL", ""),
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
