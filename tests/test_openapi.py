"""The service's OpenAPI document describes the real request body of every route and the error
bodies each API really sends (the fuzzer of issue 12, tests/test_fuzz.py, reads it), it is a
valid OpenAPI 3.1 document, and a bad body still answers in the API's own error shape (the
bodies are decoded by transport.decode_body, not Litestar)."""

from __future__ import annotations

import jsonschema
import pytest
from litestar.testing import TestClient
from schemathesis.specs.openapi.definitions import OPENAPI_31

from runtime.service.app import create_app
from runtime.service.openapi import ERROR_STATUSES
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
    "/v1/embeddings": "EmbeddingRequest",
    "/openai/download": "DownloadRequest",
    "/v1/chat/completions/tokenizer/encode/count": "TokenCountRequest",
}
ERRORS = {"/api/chat": "OllamaError", "/v1/messages": "AnthropicError"}
METHODS = {"get", "put", "post", "delete", "patch"}


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


def test_the_document_is_valid_openapi_31(document):
    """The OpenAPI 3.1 meta-schema (schemathesis carries the spec's own copy) and every
    component schema as JSON Schema 2020-12: what a client generator or fuzzer first checks."""
    jsonschema.validate(document, OPENAPI_31)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_body_taking_route_documents_a_body(document):
    """Every POST route says what it reads: JSON Structs, the audio routes' multipart form;
    the rest take no body (load/unload/unloadall name the model in the path)."""
    bodiless = {"/openai/load/{name}", "/openai/unload/{name}", "/openai/unloadall"}
    for path, item in document["paths"].items():
        if "post" in item and path not in bodiless:
            assert item["post"].get("requestBody", {}).get("content"), path


@pytest.mark.parametrize("path", ["/api/chat", "/v1/messages", "/v1/chat/completions", "/health"])
def test_every_operation_documents_its_apis_error_body(document, path):
    """Each status errors.py can send, in the shape of that path's API (never Litestar's
    ValidationException body, which the service does not send)."""
    expected = {"$ref": f"#/components/schemas/{ERRORS.get(path, 'OpenAIError')}"}
    for method in METHODS & set(document["paths"][path]):
        responses = document["paths"][path][method]["responses"]
        for status in ERROR_STATUSES:
            assert responses[str(status)]["content"]["application/json"]["schema"] == expected


def test_a_streaming_route_documents_its_whole_json_answer_too(document):
    for path in ("/v1/messages", "/v1/responses", "/api/chat", "/api/generate"):
        assert "application/json" in document["paths"][path]["post"]["responses"]["200"]["content"]


def test_download_documents_its_progress_lines_as_text(document):
    """The fuzzer's first find: the progress stream is text/plain, documented as JSON."""
    assert set(document["paths"]["/openai/download"]["post"]["responses"]["200"]["content"]) == {
        "text/plain"
    }


def test_the_served_document_is_the_completed_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path))
    with TestClient(create_app(ServiceSettings()), base_url="http://127.0.0.1") as client:
        served = client.get("/openapi.json").json()
    assert served["paths"]["/api/chat"]["post"]["responses"]["404"]["content"]
    assert "OllamaError" in served["components"]["schemas"]


# The console's own routes (runtime/service/console_routes.py, which the console page reads)
# still answer plain dicts; every API route declares its success Struct.
UNTYPED = {("get", "/foundry/catalog"), ("get", "/foundry/builds"), ("get", "/foundry/stats")}


def _says_something(schema: dict, components: dict) -> bool:
    """A schema a validator can hold a body to: a component with properties, an array of
    such, or a typed scalar; not `{}` or an object of anything."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    if schema.get("type") == "array":
        return _says_something(schema.get("items", {}), components)
    if schema.get("type") == "object" or "properties" in schema:
        return bool(schema.get("properties"))
    return "type" in schema or "oneOf" in schema or "anyOf" in schema


def test_every_json_success_answer_documents_its_body(document):
    """Enumerated from the document: each 2xx JSON answer (a streaming route's whole answer
    included) has a schema the fuzzer's conformance check can hold the body to."""
    components = document["components"]["schemas"]
    untyped = set()
    for path, item in document["paths"].items():
        for method in METHODS & set(item):
            for status, answer in item[method]["responses"].items():
                body = answer.get("content", {}).get("application/json")
                if (
                    status.startswith("2")
                    and body
                    and not _says_something(body["schema"], components)
                ):
                    untyped.add((method, path))
    assert untyped == UNTYPED
