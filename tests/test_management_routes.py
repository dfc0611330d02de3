"""Foundry Local's management routes on the real service: paths, query parameters, JSON shapes.

Driven with plain HTTP (httpx), as Foundry Local's SDKs drive them, against the session
service (`foundry service start`, a tiny synthetic Qwen2.5 built as `tiny-qwen`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

# Every field foundry-local-sdk 0.5's FoundryListResponseModel requires, with its type.
LIST_ITEM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "displayName": str,
    "modelType": str,
    "providerType": str,
    "uri": str,
    "version": str,
    "promptTemplate": (dict, type(None)),
    "publisher": str,
    "task": str,
    "runtime": dict,
    "fileSizeMb": int,
    "modelSettings": dict,
    "alias": str,
    "supportsToolCalling": bool,
    "license": str,
    "licenseDescription": str,
    "parentModelUri": str,
    "maxOutputTokens": (int, type(None)),
}
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=service.base_url, timeout=120) as client:
        yield client


def loaded(http: httpx.Client) -> list[str]:
    response = http.get("/openai/loadedmodels")
    assert response.status_code == 200
    return response.json()


def test_status_carries_the_fields_foundry_locals_sdks_read(http, service):
    status = http.get("/openai/status").json()
    assert status["modelDirPath"] == status["ModelDirPath"] == str(service.home / "cache")
    assert status["endpoints"] == status["Endpoints"] == [service.base_url]
    assert isinstance(status["pipeName"], str)
    assert status["isAutoRegistrationResolved"] is True
    assert "cpu" in status["providers"]


def test_health_says_ok(http):
    assert http.get("/health").json()["status"] == "ok"


def test_foundry_list_items_carry_every_field_the_sdk_requires(http, service_model):
    items = http.get("/foundry/list").json()
    names = {item["name"] for item in items}
    assert service_model in names  # a local build outside the catalog is listed too
    assert any(item["alias"] == "qwen2.5-0.5b" for item in items)  # and the catalog
    for item in items:
        for field, kind in LIST_ITEM_FIELDS.items():
            assert isinstance(item[field], kind), (item["name"], field, item.get(field))
        assert item["runtime"]["deviceType"] in ("CPU", "GPU", "NPU")
        assert item["runtime"]["executionProvider"].endswith("ExecutionProvider")


def test_foundry_list_puts_variants_that_run_here_first(http):
    qwen = [item for item in http.get("/foundry/list").json() if item["alias"] == "qwen2.5-0.5b"]
    assert qwen[0]["runtime"]["deviceType"] == "CPU"  # this machine has no GPU provider


def test_cached_models_are_listed_by_id(http, service_model):
    assert service_model in http.get("/openai/models").json()


def test_load_then_unload_shows_in_loaded_models(http, service_model):
    response = http.get(f"/openai/load/{service_model}", params={"ttl": 600})
    assert response.status_code == 200
    assert service_model in loaded(http)
    assert http.get(f"/openai/unload/{service_model}", params={"force": "true"}).status_code == 200
    assert service_model not in loaded(http)


def test_unload_all_empties_memory(http, service_model):
    http.get(f"/openai/load/{service_model}")
    assert loaded(http)
    assert http.get("/openai/unloadall").status_code == 200
    assert loaded(http) == []


def test_loading_an_unknown_model_is_404_in_openai_shape(http):
    response = http.get("/openai/load/no-such-model")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error" and "no-such-model" in error["message"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"ttl": "soon"}, 400),
        ({"ttl": "-5"}, 400),
        ({"force": "maybe"}, 400),
        ({"ep": "cuda"}, 501),
    ],
    ids=["ttl-not-a-number", "ttl-negative", "force-not-a-bool", "ep-not-available"],
)
def test_bad_query_parameters_are_refused_with_a_4xx_or_501(http, service_model, query, status):
    path = (
        f"/openai/unload/{service_model}" if "force" in query else f"/openai/load/{service_model}"
    )
    response = http.get(path, params=query)
    assert response.status_code == status
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_token_count_counts_the_templated_prompt(http, service_model):
    def count(messages: list[dict]) -> int:
        response = http.post(
            "/v1/chat/completions/tokenizer/encode/count",
            json={"model": service_model, "messages": messages},
        )
        assert response.status_code == 200, response.text
        return response.json()["tokenCount"]

    short = count(HELLO)
    longer = count(
        [{"role": "user", "content": "Hello there, how are you doing today, my friend?"}]
    )
    assert 0 < short < longer


@pytest.mark.parametrize(
    "body",
    [{}, {"model": 3}, {"model": {"Uri": "x"}}],
    ids=["no-model", "model-not-a-string", "model-object-without-name"],
)
def test_download_without_a_model_name_is_400(http, body):
    response = http.post("/openai/download", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_download_of_an_unknown_model_is_404_before_any_progress(http):
    response = http.post("/openai/download", json={"model": {"Name": "no-such-model:1"}})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_download_of_a_cached_catalog_variant_streams_progress_then_success(
    http, service, service_model
):
    """Foundry Local's SDK reads `NN%` from progress lines and the final `{...}` line."""
    import msgspec

    from runtime.catalog import Catalog
    from runtime.store import Store

    variant = next(v for v in Catalog.load().variants("qwen2.5-0.5b") if v.provider == "cpu")
    store = Store(service.home / "cache", sweep=False)
    source = store.resolve(service_model)
    store.register(
        Path(source.path),
        model_id=variant.id,
        metadata=msgspec.structs.replace(source.info, alias=variant.alias),
    )
    with http.stream(
        "POST", "/openai/download", json={"model": {"Name": variant.id}, "IgnorePipeReport": True}
    ) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert "%" in lines[0]
    final = json.loads(lines[-1])
    assert final["success"] is True and final["errorMessage"] is None
    assert variant.id in http.get("/openai/models").json()


def test_download_of_a_cached_model_outside_the_catalog_answers_success(http, service_model):
    """As Foundry Local does for an installed model: a built or imported model needs no download."""
    with http.stream("POST", "/openai/download", json={"model": {"Name": service_model}}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[0].startswith("Total 100.00% download") and "already cached" in lines[0]
    final = json.loads(lines[-1])
    assert final["success"] is True and final["errorMessage"] is None
    assert final["modelId"] == service_model


def test_metrics_count_requests_tokens_and_latency(http, service_model, openai_client):
    http.get(f"/openai/load/{service_model}")
    openai_client.chat.completions.create(
        model=service_model, messages=HELLO, max_tokens=4, temperature=0
    )
    stream = openai_client.chat.completions.create(
        model=service_model, messages=HELLO, max_tokens=4, temperature=0, stream=True
    )
    for _ in stream:
        pass
    text = http.get("/metrics").text
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")
    assert 'foundry_requests_total{route="/v1/chat/completions",method="POST",status="200"}' in text
    assert f'foundry_completion_tokens_total{{model="{service_model}"}}' in text
    assert f'foundry_time_to_first_token_seconds_count{{model="{service_model}"}}' in text
    assert "foundry_time_per_output_token_seconds_bucket" in text
    assert "foundry_loaded_models " in text
    assert "\nfoundry_active_requests 1\n" in text  # exactly this scrape is in flight
    assert 'route="/openai/load/{name}"' in text  # route templates ...
    assert f"/openai/load/{service_model}" not in text  # ... never raw paths with model names


def test_ps_reports_idle_time_and_time_left(http, service_model):
    http.get(f"/openai/load/{service_model}", params={"ttl": 300})
    time.sleep(0.2)
    rows = http.get("/foundry/ps").json()["models"]
    row = next(r for r in rows if r["model"] == service_model)
    assert row["idle_seconds"] is not None and row["idle_seconds"] >= 0
    assert 0 < row["expires_in"] <= 300


HOSTILE = [
    ("GET", "/openai/load/..", None, 404),  # the client folds the dot segment: /openai
    ("GET", "/openai/load/a%00b", None, 400),
    ("GET", "/openai/load/" + "x" * 300, None, 400),
    ("GET", "/openai/load/..%2F..%2Fetc", None, 404),
    ("GET", "/openai/unload/no-such-model", None, 404),
    ("POST", "/openai/download", b"not json", 400),
    ("POST", "/openai/download", b'{"model": {"Name": "../../etc/passwd"}}', 400),
    ("POST", "/v1/chat/completions/tokenizer/encode/count", b'{"model": "tiny-qwen"}', 400),
    (
        "POST",
        "/v1/chat/completions/tokenizer/encode/count",
        b'{"model": "tiny-qwen", "messages": [{"role": 1}]}',
        400,
    ),
    ("POST", "/v1/chat/completions/tokenizer/encode/count", b"[1, 2]", 400),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    HOSTILE,
    ids=[
        "dotdot",
        "nul",
        "too-long",
        "encoded-traversal",
        "unload-unknown",
        "download-not-json",
        "download-traversal",
        "count-no-messages",
        "count-bad-role",
        "count-not-an-object",
    ],
)
def test_hostile_management_requests_get_an_exact_4xx(
    http, service_model, method, path, body, status
):
    response = http.request(method, path, content=body)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_metrics_text_is_valid_prometheus_exposition(monkeypatch):
    """Pure check of the renderer: escaped labels, cumulative buckets, +Inf equals count."""
    from runtime.service import metrics

    monkeypatch.setattr(metrics, "REGISTRY", metrics.Registry())  # no other test's series
    for seconds in (0.004, 0.02, 0.3, 12.0):
        metrics.observe_ttft('odd "model"\\n', seconds)
    text = metrics.render()
    assert 'model="odd \\"model\\"\\\\n"' in text
    buckets = [
        line
        for line in text.splitlines()
        if line.startswith("foundry_time_to_first_token_seconds_bucket")
    ]
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert (
        counts == sorted(counts)
        and counts[-1] == 4
        and buckets[-1].split("le=")[1].startswith('"+Inf"')
    )
    assert text.count("# TYPE foundry_time_to_first_token_seconds histogram") == 1
