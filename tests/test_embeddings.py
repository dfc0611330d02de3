"""Embeddings: the real all-MiniLM-L6-v2 compiled end to end, then served on /v1/embeddings."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import numpy as np
import openai
import pytest
from conftest import MINILM, MINILM_INT8, foundry_build, minilm_source

from runtime.errors import InvalidRequest
from runtime.service.apis.media.wire import EmbeddingRequest, embedding_response

SENTENCES = ["The cat sits on the mat.", "Local inference keeps data private.", "hello"]


@pytest.fixture(scope="session")
def minilm_engine(minilm_builds: dict[str, dict]):
    from runtime.engines.embeddings import EmbeddingEngine
    from runtime.store.metadata import ModelMetadata

    engine = EmbeddingEngine(
        Path(minilm_builds["cpu-fp32"]["path"]), ModelMetadata(task="embeddings"), model_id="minilm"
    )
    yield engine
    engine.close()


# --- compile -------------------------------------------------------------------------------------
def test_real_minilm_compiles_to_fp32_matching_pytorch_at_cosine_0_9999(minilm_builds):
    fp32 = minilm_builds["cpu-fp32"]
    assert fp32["validation"]["kind"] == "embeddings-cosine"
    assert fp32["validation"]["min_cosine"] >= 0.9999
    files = {p.name for p in Path(fp32["path"]).iterdir()}
    assert {"model.onnx", "tokenizer.json", "pooling.json", "build.json"} <= files
    pooling = json.loads((Path(fp32["path"]) / "pooling.json").read_text())
    assert pooling == pooling | {
        "mode": "mean",
        "normalize": True,
        "max_length": 256,
        "dimension": 384,
    }


def test_int8_build_reports_cosine_of_at_least_0_99(minilm_builds):
    int8 = minilm_builds["cpu-int8"]
    assert 0.99 <= int8["validation"]["min_cosine"] < 1.0
    fp32_size = (Path(minilm_builds["cpu-fp32"]["path"]) / "model.onnx").stat().st_size
    assert (Path(int8["path"]) / "model.onnx").stat().st_size < fp32_size


def test_rebuilding_the_same_checkpoint_is_a_cache_hit(minilm_builds, service_home):
    again = foundry_build(
        service_home, str(minilm_source()), "--target", "cpu-fp32", "--as", MINILM, "--json"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["models"][0]["cache_hit"] is True


def test_engine_matches_sentence_transformers(minilm_engine):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_source()), device="cpu")
    want = model.encode(SENTENCES)
    got = np.asarray(minilm_engine.embed(SENTENCES))
    assert got.shape == (3, 384)
    assert float(((got * want).sum(axis=1)).min()) > 0.9999


def test_inputs_longer_than_256_tokens_are_truncated_not_rejected(minilm_engine):
    rows = minilm_engine.tokenize(["word " * 1000])
    assert len(rows[0]) == 256


# --- wire conversions (pure) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hi", ["hi"]),
        (["a", "b"], ["a", "b"]),
        ([101, 7592, 102], [[101, 7592, 102]]),
        ([[101, 102], [101, 7592, 102]], [[101, 102], [101, 7592, 102]]),
    ],
    ids=["string", "strings", "token-ids", "token-id-lists"],
)
def test_each_openai_input_shape_is_accepted(value, expected):
    assert EmbeddingRequest(model="m", input=value).inputs() == expected


@pytest.mark.parametrize(
    "value",
    [[], "", ["ok", ""], ["a", 1], [[1], "a"], [-1, 3], [[]], {"a": 1}, [True, False]],
    ids=[
        "empty-list",
        "empty-string",
        "one-empty",
        "mixed",
        "mixed-lists",
        "negative-id",
        "empty-ids",
        "object",
        "bools",
    ],
)
def test_malformed_inputs_are_invalid_requests(value):
    with pytest.raises(InvalidRequest):
        EmbeddingRequest(model="m", input=value).inputs()


def test_base64_encoding_is_little_endian_float32():
    vectors = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    answer = embedding_response(vectors, model="m", encoding_format="base64", prompt_tokens=3)
    import base64

    body = msgspec.to_builtins(answer)  # the JSON the route sends

    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == [0.5, -1.0, 2.0]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


# --- served --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def embeddings_client(minilm_builds, service, openai_client):
    return openai_client


def test_openai_client_embeds_one_string(embeddings_client, minilm_engine):
    reply = embeddings_client.embeddings.create(model=MINILM, input="The cat sits on the mat.")
    assert len(reply.data) == 1
    vector = np.asarray(reply.data[0].embedding)
    assert vector.shape == (384,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    assert np.allclose(vector, minilm_engine.embed(["The cat sits on the mat."])[0], atol=1e-6)
    assert reply.usage.prompt_tokens == len(minilm_engine.tokenize(["The cat sits on the mat."])[0])


def test_openai_client_embeds_a_list_in_order_as_floats_and_base64(
    embeddings_client, minilm_engine
):
    import base64

    want = np.asarray(minilm_engine.embed(SENTENCES))
    floats = embeddings_client.embeddings.create(
        model=MINILM, input=SENTENCES, encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert np.allclose(np.asarray([d.embedding for d in floats.data]), want, atol=1e-6)
    # Asked for explicitly, the client hands base64 back as the string the service sent.
    encoded = embeddings_client.embeddings.create(
        model=MINILM, input=SENTENCES, encoding_format="base64"
    )
    got = np.asarray(
        [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in encoded.data]
    )
    assert np.allclose(got, want, atol=1e-6)


def test_token_arrays_embed_like_the_text_they_encode(embeddings_client, minilm_engine):
    ids = minilm_engine.tokenize(SENTENCES)
    reply = embeddings_client.embeddings.create(model=MINILM, input=ids)
    got = np.asarray([d.embedding for d in reply.data])
    assert np.allclose(got, np.asarray(minilm_engine.embed(SENTENCES)), atol=1e-5)


def test_int8_model_serves_vectors_close_to_fp32(embeddings_client, minilm_engine):
    reply = embeddings_client.embeddings.create(model=MINILM_INT8, input=SENTENCES)
    got = np.asarray([d.embedding for d in reply.data])
    assert float((got * np.asarray(minilm_engine.embed(SENTENCES))).sum(axis=1).min()) > 0.99


def test_concurrent_requests_are_batched_without_mixing_results(embeddings_client, minilm_engine):
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(24)]
    want = np.asarray(minilm_engine.embed(texts))
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda t: embeddings_client.embeddings.create(model=MINILM, input=t), texts)
        )
    got = np.asarray([r.data[0].embedding for r in replies])
    assert np.allclose(got, want, atol=1e-5)


def test_dimensions_equal_to_the_model_size_are_accepted(embeddings_client):
    reply = embeddings_client.embeddings.create(model=MINILM, input="hi", dimensions=384)
    assert len(reply.data[0].embedding) == 384


def test_dimensions_on_a_non_matryoshka_model_is_400(embeddings_client):
    with pytest.raises(openai.BadRequestError) as info:
        embeddings_client.embeddings.create(model=MINILM, input="hi", dimensions=128)
    assert info.value.body["param"] == "dimensions"
    assert "Matryoshka" in info.value.body["message"]


def test_chat_model_asked_for_embeddings_is_400_naming_its_task(embeddings_client, service_model):
    with pytest.raises(openai.BadRequestError) as info:
        embeddings_client.embeddings.create(model=service_model, input="hi")
    assert info.value.body["code"] == "unsupported_task"
    assert "chat" in info.value.body["message"]


def test_embedding_model_asked_for_chat_is_400_naming_its_task(embeddings_client):
    with pytest.raises(openai.BadRequestError) as info:
        embeddings_client.chat.completions.create(
            model=MINILM, messages=[{"role": "user", "content": "hi"}]
        )
    assert "embeddings" in info.value.body["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MINILM, "input": ""}, "input"),
        ({"model": MINILM, "input": []}, "input"),
        ({"model": MINILM, "input": [[999999999]]}, "input"),
        ({"model": MINILM, "input": "x", "encoding_format": "hex"}, None),
    ],
    ids=["empty-string", "empty-list", "token-out-of-vocab", "bad-encoding"],
)
def test_bad_embeddings_requests_are_400_in_openai_shape(embeddings_client, service, body, param):
    import httpx

    reply = httpx.post(f"{service.base_url}/v1/embeddings", json=body, timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_dimensions_truncate_and_renormalise_on_a_matryoshka_model(minilm_builds, tmp_path):
    from runtime.engines.embeddings import EmbeddingEngine
    from runtime.store.metadata import ModelMetadata

    folder = tmp_path / "matryoshka"
    shutil.copytree(Path(minilm_builds["cpu-fp32"]["path"]), folder, copy_function=os.link)
    pooling = json.loads((folder / "pooling.json").read_text())
    (folder / "pooling.json").unlink()  # a hard link: never write through it into the store
    (folder / "pooling.json").write_text(json.dumps(pooling | {"matryoshka": True}))
    engine = EmbeddingEngine(folder, ModelMetadata(task="embeddings"), model_id="minilm")
    try:
        full = engine.embed_ids(engine.tokenize(SENTENCES))
        short = engine.truncate_dimensions(full, 64)
    finally:
        engine.close()
    assert short.shape == (3, 64)
    assert np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    assert np.allclose(short, full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True))
