"""Audio in: any supported upload -> 16 kHz mono float32 PCM, chunked for Whisper.

Decoders are pure wheels, no system ffmpeg: `soundfile` (libsndfile 1.2: wav, flac,
ogg/vorbis/opus, mp3, aiff) always, and `av` (PyAV wheels bundle ffmpeg: m4a, mp4, webm,
aac, ...) when the optional `[audio]` extra is installed. Resampling uses `soxr`.
Whisper sees at most 30 s at a time, so longer audio is cut into 30 s windows
(`split_windows`) and the transcripts are stitched by the speech engine.

Uploads are bounded by what they decode to, not only by their size: a few MB of FLAC
silence declares hours of audio. The header's duration is checked before anything is
allocated, and decoding runs block by block with a running cap (a header can lie), so at
most `MAX_AUDIO_SECONDS` of mono samples at the native rate are ever held.
numpy and the decoders are imported inside functions (the CLI imports this module).
"""

from __future__ import annotations

import io
import wave
from typing import TYPE_CHECKING

from runtime.errors import InvalidAudio

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MAX_AUDIO_SECONDS",
    "SAMPLE_RATE",
    "WINDOW_SECONDS",
    "decode_audio",
    "split_windows",
    "supported_formats",
    "to_wav_bytes",
]

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0
MAX_AUDIO_SECONDS = 1800.0  # 30 min: OpenAI's 25 MB upload limit holds ~26 min of 128 kb/s mp3
MAX_SAMPLE_RATE = 384_000  # the highest rate audio hardware records
BLOCK_FRAMES = 1 << 16
SOUNDFILE_FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "aiff")
AV_FORMATS = ("m4a", "mp4", "webm", "aac", "mpeg", "mpga")


def _has_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def supported_formats() -> list[str]:
    """The container formats this installation decodes (what error messages list)."""
    return list(SOUNDFILE_FORMATS) + (list(AV_FORMATS) if _has_av() else [])


def decode_audio(data: bytes, filename: str | None = None) -> np.ndarray:
    """Mono float32 samples at 16 kHz in [-1, 1].

    Raises:
        InvalidAudio: empty file, undecodable bytes, an unsupported format (the message lists
            the supported ones), or audio with no samples.
    """
    if not data:
        raise InvalidAudio("the audio file is empty", param="file")
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    pcm, rate = _decode_soundfile(data)
    if pcm is None and _has_av():
        pcm, rate = _decode_av(data)
    if pcm is None:
        known = ", ".join(supported_formats())
        if suffix and suffix not in supported_formats():
            raise InvalidAudio(
                f"audio format {suffix!r} is not supported; supported: {known}", param="file"
            )
        raise InvalidAudio(
            f"could not decode the audio file{f' {filename!r}' if filename else ''}: "
            "it is corrupt or not "
            f"in a supported format ({known})",
            param="file",
        )
    if pcm.size == 0:
        raise InvalidAudio("the audio file has no samples", param="file")
    return _resample(pcm, rate)


def _too_long(seconds: float) -> InvalidAudio:
    return InvalidAudio(
        f"the audio is {seconds:,.0f} s long; at most {MAX_AUDIO_SECONDS:,.0f} s are accepted",
        hint="split the recording into shorter files",
        param="file",
    )


def _decode_soundfile(data: bytes) -> tuple[np.ndarray | None, int]:
    """Mono samples at the file's own rate, decoded in blocks under the duration cap."""
    import numpy as np
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as audio:
            rate = int(audio.samplerate)
            if not 0 < rate <= MAX_SAMPLE_RATE:
                raise InvalidAudio(f"the audio declares a sample rate of {rate} Hz", param="file")
            if audio.frames > MAX_AUDIO_SECONDS * rate:  # the header's claim, before decoding
                raise _too_long(audio.frames / rate)
            limit, parts, total = int(MAX_AUDIO_SECONDS * rate), [], 0
            while True:
                block = audio.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                total += len(block)
                if total > limit:  # the header understated it
                    raise _too_long(total / rate)
                parts.append(block.mean(axis=1))
    except InvalidAudio:  # a ValueError too: not "undecodable"
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None, 0
    pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return pcm.astype(np.float32, copy=False), rate


def _decode_av(data: bytes) -> tuple[np.ndarray | None, int]:
    import av
    import numpy as np

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                return None, 0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            parts, total = [], 0
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    total += parts[-1].size
                if total > MAX_AUDIO_SECONDS * SAMPLE_RATE:
                    raise _too_long(total / SAMPLE_RATE)
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except InvalidAudio:
        raise
    except (av.FFmpegError, ValueError, IndexError):
        return None, 0
    if not parts:
        return np.zeros(0, dtype=np.float32), SAMPLE_RATE
    return np.concatenate(parts).astype(np.float32), SAMPLE_RATE


def _resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    import numpy as np

    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(pcm, dtype=np.float32)
    if rate <= 0:
        raise InvalidAudio(f"the audio declares a sample rate of {rate} Hz", param="file")
    import soxr

    return soxr.resample(pcm.astype(np.float32), rate, SAMPLE_RATE).astype(np.float32)


def split_windows(pcm: np.ndarray, seconds: float = WINDOW_SECONDS) -> list[np.ndarray]:
    """Consecutive windows of at most `seconds`.

    A last window shorter than 0.1 s is dropped unless it is the whole input (Whisper
    hallucinates on near-empty windows).
    """
    size = int(seconds * SAMPLE_RATE)
    windows = [pcm[start : start + size] for start in range(0, len(pcm), size)]
    if len(windows) > 1 and len(windows[-1]) < SAMPLE_RATE // 10:
        windows.pop()
    return windows


def to_wav_bytes(pcm: np.ndarray) -> bytes:
    """16-bit PCM WAV at 16 kHz (what onnxruntime-genai's audio processor reads)."""
    import numpy as np

    clipped = np.clip(pcm, -1.0, 1.0)
    ints = (clipped * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(ints.tobytes())
    return buffer.getvalue()
