"""Whisper: a synthetic whisper-tiny compiled with token parity, then served on /v1/audio/*.

Random weights write a random transcript, so served answers are compared with the engine's
own output on the same decoded audio (and the compiler's check compares the engine with
transformers' greedy tokens), never with a fixed string.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from conftest import WHISPER, WHISPER_INT4, foundry_build

from runtime.audio import SAMPLE_RATE, decode_audio, split_windows, to_wav_bytes
from runtime.errors import InvalidAudio
from runtime.service.apis.media.wire import render_transcript


def tone(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (220 + 200 * t) * t)).astype(np.float32)


def encoded(pcm: np.ndarray, fmt: str, subtype: str, rate: int = SAMPLE_RATE) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def speech_engine(whisper_builds):
    from runtime.engines.speech import SpeechEngine
    from runtime.store.metadata import ModelMetadata

    engine = SpeechEngine(
        Path(whisper_builds["cpu-fp32"]["path"]), ModelMetadata(task="speech"), model_id="whisper"
    )
    yield engine
    engine.close()


# --- compile -------------------------------------------------------------------------------------
def test_fp32_whisper_greedy_tokens_equal_transformers_generate(whisper_builds):
    validation = whisper_builds["cpu-fp32"]["validation"]
    assert validation["kind"] == "speech-greedy-tokens"
    assert validation["exact"] is True
    assert validation["tokens"] >= 8
    files = {p.name for p in Path(whisper_builds["cpu-fp32"]["path"]).iterdir()}
    assert {
        "encoder.onnx",
        "decoder.onnx",
        "audio_processor_config.json",
        "genai_config.json",
    } <= files


def test_multilingual_whisper_is_validated_with_its_language_and_task_prompt(whisper_builds):
    validation = whisper_builds["cpu-fp32"]["validation"]
    assert validation["multilingual"] is True
    assert validation["prompt"] == "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"


def test_int4_whisper_reports_its_token_agreement(whisper_builds):
    validation = whisper_builds["cpu-int4"]["validation"]
    assert validation["required"] == "report"
    assert validation["tokens"] == 24
    assert 0.0 <= validation["token_agreement"] <= 1.0
    assert 0.0 <= validation["quality"]["top1"] <= 1.0
    assert validation["quality"]["kld"] >= 0.0
    assert validation["quality"]["tokens"] == 24


def test_a_speech_validation_that_compared_no_token_fails():
    from compiler.validate_media import check_speech, speech_record
    from runtime.errors import ValidationFailed

    record = speech_record("<|startoftranscript|><|notimestamps|>", False, "int4", [], [])
    assert record["tokens"] == 0 and record["exact"] is False
    with pytest.raises(ValidationFailed, match="compared zero tokens"):
        check_speech(record, "int4")


def test_english_only_prompt_has_no_language_or_task_token():
    from runtime.engines.speech import decoder_prompt

    assert decoder_prompt("en", multilingual=False) == "<|startoftranscript|><|notimestamps|>"
    assert (
        decoder_prompt(None, context="Foundry", multilingual=False)
        == "<|startofprev|> Foundry<|startoftranscript|><|notimestamps|>"
    )
    assert decoder_prompt("german", "translate") == (
        "<|startoftranscript|><|de|><|translate|><|notimestamps|>"
    )


@pytest.mark.parametrize(
    ("generation", "vocab", "expected"),
    [({"is_multilingual": False}, 51865, False), ({}, 51864, False), ({}, 51865, True)],
    ids=["generation-config-says", "en-vocabulary", "multilingual-vocabulary"],
)
def test_whether_an_artifact_is_multilingual_comes_from_its_files(
    tmp_path, generation, vocab, expected
):
    from runtime.engines.speech import multilingual

    if generation:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"vocab_size": vocab}}))
    assert multilingual(tmp_path) is expected


def test_whisper_checkpoint_without_its_tokenizer_is_refused_in_one_line(tiny_source, tmp_path):
    source = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_source("whisper-tiny"), source)
    (source / "tokenizer.json").unlink()
    result = foundry_build(tmp_path / "home", str(source), "--target", "cpu-fp32")
    assert result.returncode == 2
    assert "Whisper tokenizer" in result.stderr
    assert "Traceback" not in result.stderr


# --- audio decoding (pure) -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [
        ("WAV", "PCM_16", 16000),
        ("WAV", "FLOAT", 44100),
        ("FLAC", "PCM_16", 22050),
        ("OGG", "VORBIS", 44100),
        ("MP3", "MPEG_LAYER_III", 44100),
    ],
    ids=["wav16k", "wav-float-44k", "flac-22k", "ogg-vorbis", "mp3"],
)
def test_common_formats_decode_to_16k_mono(fmt, subtype, rate):
    pcm = decode_audio(encoded(tone(2.0, rate), fmt, subtype, rate), f"a.{fmt.lower()}")
    assert abs(len(pcm) - 2 * SAMPLE_RATE) < SAMPLE_RATE // 10  # codecs pad a few frames
    assert pcm.dtype == np.float32
    assert 0.2 < float(np.abs(pcm).max()) < 0.45


def test_m4a_decodes_when_pyav_is_installed():
    av = pytest.importorskip("av")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            tone(1.0, 44100).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    pcm = decode_audio(buffer.getvalue(), "a.m4a")
    assert abs(len(pcm) - SAMPLE_RATE) < SAMPLE_RATE // 10


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"", "a.wav", "empty"),
        (b"RIFF" + b"\x00" * 64, "a.wav", "corrupt"),
        (b"not audio" * 50, "a.xyz", "'xyz' is not supported"),
    ],
    ids=["empty", "corrupt", "unknown-format"],
)
def test_undecodable_audio_says_what_is_wrong_and_which_formats_work(data, name, words):
    with pytest.raises(InvalidAudio) as info:
        decode_audio(data, name)
    assert words in str(info.value)
    if data:
        assert "wav, flac, ogg" in str(info.value)


def test_long_audio_is_cut_into_30_second_windows():
    windows = split_windows(np.zeros(int(65 * SAMPLE_RATE), dtype=np.float32))
    assert [len(w) / SAMPLE_RATE for w in windows] == [30.0, 30.0, 5.0]


def test_srt_and_vtt_render_one_cue_per_window():
    from runtime.engines.speech import Segment, Transcript

    transcript = Transcript(
        "a b", "english", 35.5, [Segment(0, 0.0, 30.0, "a"), Segment(1, 30.0, 35.5, "b")]
    )
    srt, _ = render_transcript(transcript, "srt", "transcribe")
    assert srt == "1\n00:00:00,000 --> 00:00:30,000\na\n\n2\n00:00:30,000 --> 00:00:35,500\nb\n\n"
    vtt, media = render_transcript(transcript, "vtt", "transcribe")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:30.000\na\n")
    assert media == "text/vtt"


# --- served --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def speech_client(whisper_builds, service, openai_client):
    return openai_client


@pytest.fixture(scope="session")
def speech_wav() -> bytes:
    return to_wav_bytes(tone(3.0))


def expected_text(engine, audio: bytes, name: str = "speech.wav", **kwargs) -> str:
    return engine.transcribe(decode_audio(audio, name), **kwargs).text


def test_openai_client_transcribes_a_wav_like_the_engine(speech_client, speech_engine, speech_wav):
    reply = speech_client.audio.transcriptions.create(
        model=WHISPER, file=("speech.wav", speech_wav)
    )
    assert reply.text == expected_text(speech_engine, speech_wav)
    assert reply.text  # random weights still write something


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_text_srt_and_vtt_formats_carry_the_same_transcript(
    speech_client, speech_engine, speech_wav, response_format
):
    reply = speech_client.audio.transcriptions.create(
        model=WHISPER, file=("speech.wav", speech_wav), response_format=response_format
    )
    text = expected_text(speech_engine, speech_wav)
    assert isinstance(reply, str)
    if response_format == "text":
        assert reply.strip() == text
    else:
        assert text in reply
        assert ("-->" in reply) and (reply.startswith("WEBVTT") == (response_format == "vtt"))


def test_verbose_json_of_65_seconds_has_three_segments_stitched_in_order(
    speech_client, speech_engine
):
    audio = to_wav_bytes(np.concatenate([tone(30.0), tone(30.0) * 0.5, tone(5.0)]))
    reply = speech_client.audio.transcriptions.create(
        model=WHISPER, file=("long.wav", audio), response_format="verbose_json"
    )
    assert reply.duration == pytest.approx(65.0)
    assert [(s.start, s.end) for s in reply.segments] == [(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]
    assert reply.text == " ".join(s.text for s in reply.segments if s.text)
    assert reply.text == expected_text(speech_engine, audio, "long.wav")


def test_flac_upload_transcribes_like_the_same_audio_decoded_locally(speech_client, speech_engine):
    audio = encoded(tone(2.0, 44100), "FLAC", "PCM_16", 44100)
    reply = speech_client.audio.transcriptions.create(model=WHISPER, file=("speech.flac", audio))
    assert reply.text == expected_text(speech_engine, audio, "speech.flac")


def test_translation_route_runs_the_translate_task(speech_client, speech_engine, speech_wav):
    reply = speech_client.audio.translations.create(model=WHISPER, file=("speech.wav", speech_wav))
    assert reply.text == expected_text(speech_engine, speech_wav, task="translate")


def test_int4_whisper_serves_a_transcript(speech_client, speech_wav):
    reply = speech_client.audio.transcriptions.create(
        model=WHISPER_INT4, file=("speech.wav", speech_wav)
    )
    assert isinstance(reply.text, str)


def test_foundry_model_run_file_prints_the_transcript(
    speech_client, speech_engine, speech_wav, service, tmp_path
):
    path = tmp_path / "speech.wav"
    path.write_bytes(speech_wav)
    result = service.cli("model", "run", WHISPER, "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_text(speech_engine, speech_wav)


def post_audio(service, data: bytes, name: str = "speech.wav", **fields: str) -> httpx.Response:
    form = {"model": WHISPER, **fields}
    return httpx.post(
        f"{service.base_url}/v1/audio/transcriptions",
        files={"file": (name, data)},
        data=form,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("data", "name", "fields", "status", "code"),
    [
        (b"", "empty.wav", {}, 400, "invalid_audio"),
        (b"RIFF" + b"\x00" * 100, "broken.wav", {}, 400, "invalid_audio"),
        (b"\x00\x01" * 500, "clip.xyz", {}, 400, "invalid_audio"),
        (None, "speech.wav", {"language": "klingon"}, 400, "invalid_request"),
        (None, "speech.wav", {"response_format": "docx"}, 400, "invalid_request"),
        (None, "speech.wav", {"temperature": "7"}, 400, "invalid_request"),
        (None, "speech.wav", {"model": "no-such-model"}, 404, "model_not_found"),
    ],
    ids=[
        "empty",
        "corrupt",
        "unsupported-format",
        "bad-language",
        "bad-format",
        "bad-temperature",
        "unknown-model",
    ],
)
def test_bad_audio_requests_get_exact_4xx_in_openai_shape(
    speech_client, service, speech_wav, data, name, fields, status, code
):
    reply = post_audio(service, speech_wav if data is None else data, name, **fields)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code


def test_unsupported_format_error_lists_the_formats_that_work(speech_client, service):
    reply = post_audio(service, b"\x00\x01" * 500, "clip.xyz")
    assert "supported: wav, flac, ogg" in reply.json()["error"]["message"]


def test_audio_over_the_upload_limit_is_413(speech_client, service):
    reply = post_audio(service, b"\x00" * (26 * 1024 * 1024), "huge.wav")
    assert reply.status_code == 413, reply.text[:300]


def test_whisper_asked_for_chat_is_400_naming_speech(speech_client):
    with pytest.raises(openai.BadRequestError) as info:
        speech_client.chat.completions.create(
            model=WHISPER, messages=[{"role": "user", "content": "hi"}]
        )
    assert "speech" in info.value.body["message"]


def test_chat_model_asked_to_transcribe_is_400_naming_chat(
    speech_client, service_model, speech_wav
):
    with pytest.raises(openai.BadRequestError) as info:
        speech_client.audio.transcriptions.create(
            model=service_model, file=("speech.wav", speech_wav)
        )
    assert info.value.body["code"] == "unsupported_task"
    assert "chat" in info.value.body["message"]


def test_transcription_without_a_file_is_400_naming_the_field(speech_client, service):
    reply = httpx.post(
        f"{service.base_url}/v1/audio/transcriptions", files={"model": (None, WHISPER)}, timeout=60
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "file"


# --- honest figures, a free event loop, and cancellation [issue 12] ------------------------------
def test_verbose_json_figures_are_measured_on_the_decode(speech_engine):
    """avg_logprob, no_speech_prob and compression_ratio come from this window's decode (they
    were the constant 0.0), and forcing the prompt after <|startoftranscript|> one step at a time
    (to read no_speech_prob where Whisper reads it) writes the tokens of the whole prompt."""
    import zlib

    import onnxruntime_genai as og

    from runtime.engines.speech import compression_ratio

    wav = to_wav_bytes(tone(3.0))
    prompt = speech_engine.prompt("en")
    decoded = speech_engine.decode_window(wav, prompt)
    inputs = speech_engine.processor([prompt], audios=og.Audios.open_bytes(wav))
    params = og.GeneratorParams(speech_engine.model)
    params.set_search_options(max_length=speech_engine.context_length, do_sample=False)
    generator = og.Generator(speech_engine.model, params)
    generator.set_inputs(inputs)
    while not generator.is_done():
        generator.generate_next_token()
    start = int(inputs["input_ids"].as_numpy().shape[-1])
    whole = [int(t) for t in generator.get_sequence(0)][start:]
    assert decoded.ids == [t for t in whole if t != speech_engine.eos_token_id]
    assert decoded.avg_logprob is not None and decoded.avg_logprob < 0
    assert decoded.no_speech_prob is not None and 0 < decoded.no_speech_prob < 1
    other = speech_engine.decode_window(to_wav_bytes(tone(3.0) * 0.01), prompt)
    assert (other.avg_logprob, other.no_speech_prob) != (
        decoded.avg_logprob,
        decoded.no_speech_prob,
    )
    text = "the same words " * 20
    assert compression_ratio(text) == len(text) / len(zlib.compress(text.encode())) > 2


def test_served_verbose_json_carries_the_engines_figures(speech_client, speech_engine, speech_wav):
    reply = speech_client.audio.transcriptions.create(
        model=WHISPER, file=("speech.wav", speech_wav), response_format="verbose_json"
    )
    (segment,) = speech_engine.transcribe(decode_audio(speech_wav, "speech.wav")).segments
    (served,) = reply.segments
    assert served.avg_logprob == pytest.approx(segment.avg_logprob, abs=1e-6)
    assert served.no_speech_prob == pytest.approx(segment.no_speech_prob, abs=1e-6)
    assert served.compression_ratio == pytest.approx(segment.compression_ratio)
    assert served.avg_logprob < 0 and served.compression_ratio > 0


def _active_http_requests(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("foundry_active_requests"))
    return float(line.split()[-1]) - 1  # this /metrics request counts itself


def test_a_long_transcription_keeps_health_fast_and_stops_when_its_client_leaves(
    speech_client, service
):
    """25 minutes of audio (50 windows): /health answers quickly while it decodes, and when the
    client hangs up the decode stops at its next step instead of running every window."""
    import contextlib
    import socket
    import threading
    import time

    seconds = 1500.0
    pcm = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    pcm[: 3 * SAMPLE_RATE] = tone(3.0)  # random weights decode every window to the end anyway
    audio = encoded(pcm, "FLAC", "PCM_16")  # silence packs 25 minutes into a small upload
    request = httpx.Request(
        "POST",
        f"{service.base_url}/v1/audio/transcriptions",
        files={"file": ("long.flac", audio)},
        data={"model": WHISPER},
    )
    head = (
        f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nHost: {request.url.netloc.decode()}\r\n"
    )
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host")
    connection = socket.create_connection(("127.0.0.1", service.port))
    answered: list[bytes] = []

    def transcribe() -> None:
        with contextlib.suppress(OSError):  # the socket is closed under it
            connection.sendall(head.encode() + b"\r\n" + request.read())
            answered.append(connection.recv(1000))

    def health_latencies(count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            assert httpx.get(f"{service.base_url}/health", timeout=10).status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
        return sorted(latencies)

    # The machine's own latency first (shared and loaded in CI): the decode may add < 100 ms.
    idle = health_latencies(21)
    worker = threading.Thread(target=transcribe, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while _active_http_requests(service.base_url) < 1:
        assert time.monotonic() < deadline and not answered, answered
        time.sleep(0.05)
    time.sleep(1.0)  # into the decode (the upload was read and decoded first)
    latencies = health_latencies(41)
    assert worker.is_alive(), "the transcription finished before /health was measured"
    connection.shutdown(socket.SHUT_RDWR)  # the client goes away
    connection.close()
    hung_up = time.monotonic()
    while _active_http_requests(service.base_url) > 0:
        assert time.monotonic() - hung_up < 20, "the transcription kept decoding for nobody"
        time.sleep(0.1)
    print(
        f"/health idle: median {idle[10] * 1000:.1f} ms; during a long transcription: median "
        f"{latencies[20] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; decode stopped "
        f"{time.monotonic() - hung_up:.2f} s after hang-up"
    )
    assert latencies[20] - idle[10] < 0.1, (idle, latencies)
