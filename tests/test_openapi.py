"""The service's OpenAPI document describes the real request body of every JSON route that
generates or manages models (the fuzzer of issue 12 reads it), and a bad body still answers
in the API's own error shape (the bodies are decoded by transport.decode_body, not Litestar)."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from runtime.service.app import create_app
from runtime.service.settings import ServiceSettings

BODIES = {
    "/v1/chat/completions": "ChatCompletionRequest",
    "/v1/completions": "CompletionRequest",
    "/v1/responses": "ResponsesRequest",
    "/v1/messages": "MessagesRequest",
    "/v1/messages/count_tokens": "CountTokensRequest",
    "/api/chat": "ChatRequest",
    "/api/generate": "GenerateRequest",
    "/api/embed": "EmbedRequest",
    "/api/embeddings": "EmbeddingsRequest",
    "/api/show": "ShowRequest",
    "/api/pull": "PullRequest",
}


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app(ServiceSettings()).openapi_schema.to_schema()


@pytest.mark.parametrize(("path", "struct"), sorted(BODIES.items()))
def test_each_json_route_documents_its_request_struct(document, path, struct):
    body = document["paths"][path]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{struct}"
    }
    assert document["components"]["schemas"][struct]["properties"]["model"]


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", lambda b: b["error"]["param"] == "messages[0].role"),
        (
            "/v1/messages",
            lambda b: b["type"] == "error" and "messages[0].role" in b["error"]["message"],
        ),
        ("/api/chat", lambda b: set(b) == {"error"} and "messages[0].role" in b["error"]),
    ],
    ids=["openai", "anthropic", "ollama"],
)
def test_a_bad_body_is_a_400_in_the_apis_own_shape(path, shape, tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path))
    bad = {"model": "m", "max_tokens": 4, "messages": [{"role": 7, "content": "x"}]}
    with TestClient(create_app(ServiceSettings()), base_url="http://127.0.0.1") as client:
        response = client.post(path, json=bad)
    assert response.status_code == 400, response.text
    assert shape(response.json()), response.text
