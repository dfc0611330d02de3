"""Who may talk to the service: API key on every route but /health, Host header, CORS, no key leaks.

One service started with `foundry service start --api-key` on loopback, in its own
FOUNDRY_HOME, driven with plain HTTP (httpx) and the real `openai` and `anthropic` clients.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import run_foundry

KEY = "sk-test-7f3a9c1e5b"
WRONG = "sk-test-0000000000"

# (method, path, body): every kind of route the service has; none but /health is open.
PROTECTED = [
    ("GET", "/openai/status", None),
    ("GET", "/foundry/list", None),
    ("GET", "/openai/models", None),
    ("GET", "/openai/loadedmodels", None),
    ("GET", "/openai/unloadall", None),
    ("GET", "/openai/load/tiny-qwen", None),
    ("GET", "/openai/unload/tiny-qwen", None),
    ("POST", "/openai/download", {"model": "qwen2.5-0.5b"}),
    ("POST", "/v1/chat/completions/tokenizer/encode/count", {"model": "x", "messages": []}),
    ("GET", "/foundry/ps", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("POST", "/v1/completions", {"model": "x", "prompt": "hi"}),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in PROTECTED]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory):
    """(home, base_url) of a service that requires KEY."""
    home = tmp_path_factory.mktemp("keyed-home")
    started = run_foundry("service", "start", "--api-key", KEY, home=home)
    assert started.returncode == 0, started.stderr
    port = json.loads((home / "service.json").read_text())["port"]
    yield home, f"http://127.0.0.1:{port}"
    run_foundry("service", "stop", home=home)


def call(
    base_url: str, method: str, path: str, body: object = None, **headers: str
) -> httpx.Response:
    return httpx.request(method, f"{base_url}{path}", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=ROUTE_IDS)
def test_every_route_but_health_refuses_a_request_without_the_key(keyed, method, path, body):
    _, base_url = keyed
    response = call(base_url, method, path, body)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "missing_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=ROUTE_IDS)
def test_every_route_but_health_refuses_a_wrong_key(keyed, method, path, body):
    _, base_url = keyed
    for headers in (
        {"authorization": f"Bearer {WRONG}"},
        {"x-api-key": WRONG},
        {"authorization": KEY},
    ):
        response = call(base_url, method, path, body, **headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] in ("invalid_api_key", "missing_api_key")
        assert KEY not in response.text and WRONG not in response.text


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_the_key_is_accepted_as_bearer_token_or_x_api_key(keyed, header):
    _, base_url = keyed
    value = f"Bearer {KEY}" if header == "authorization" else KEY
    for method, path, body in PROTECTED:
        if path.startswith(("/openai/load/", "/openai/unload/", "/openai/download")):
            continue  # these act on models; that they pass the key check is enough below
        response = call(base_url, method, path, body, **{header: value})
        assert response.status_code != 401, (path, response.text)
    assert call(base_url, "GET", "/openai/status", **{header: value}).status_code == 200


def test_health_answers_without_a_key(keyed):
    _, base_url = keyed
    response = call(base_url, "GET", "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_openai_client_needs_the_key(keyed):
    import openai

    _, base_url = keyed
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base_url}/v1", api_key=WRONG, max_retries=0).models.list()
    models = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0).models.list()
    assert models.object == "list"


def test_a_foreign_host_header_is_refused_while_bound_to_loopback(keyed):
    """A DNS-rebinding page's requests carry its own name as Host; they never reach a handler."""
    _, base_url = keyed
    auth = {"authorization": f"Bearer {KEY}"}
    for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io", "192.168.1.20:8080"):
        response = call(base_url, "GET", "/openai/models", host=host, **auth)
        assert response.status_code == 403, host
        assert response.json()["error"]["code"] == "host_not_allowed"
    for host in ("localhost", "localhost:1234", "127.0.0.1:9", "[::1]:5273", "LOCALHOST"):
        assert call(base_url, "GET", "/openai/models", host=host, **auth).status_code == 200, host


def test_cors_is_off_unless_configured(keyed):
    _, base_url = keyed
    response = call(
        base_url,
        "GET",
        "/openai/models",
        origin="http://evil.example",
        authorization=f"Bearer {KEY}",
    )
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{base_url}/v1/chat/completions",
        timeout=10,
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_the_key_appears_in_no_log_state_file_metrics_or_command_line(keyed):
    home, base_url = keyed
    call(base_url, "GET", "/openai/models", authorization=f"Bearer {WRONG}")
    call(base_url, "GET", "/openai/models", **{"x-api-key": KEY})
    metrics = call(base_url, "GET", "/metrics", authorization=f"Bearer {KEY}")
    assert metrics.status_code == 200
    assert 'route="/openai/models",method="GET",status="401"' in metrics.text  # refusals count
    state = json.loads((home / "service.json").read_text())
    assert state["api_key_set"] is True
    cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes()
    for text in (
        metrics.text,
        (home / "service.json").read_text(),
        (home / "logs" / "service.log").read_text(),
        cmdline.decode(errors="replace"),
    ):
        assert KEY not in text and WRONG not in text


def test_cli_commands_without_the_key_fail_in_one_line_and_say_how_to_fix_it(keyed):
    home, _ = keyed
    result = run_foundry("model", "ps", home=home)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("error: this service requires an API key")
    assert "FOUNDRY_API_KEY" in result.stderr and "Traceback" not in result.stderr
    assert run_foundry("model", "ps", home=home, env={"FOUNDRY_API_KEY": KEY}).returncode == 0


def test_status_shows_the_endpoint_with_or_without_the_key(keyed):
    home, base_url = keyed
    without = run_foundry("service", "status", home=home)
    assert base_url in without.stdout
    assert "API key required" in without.stdout
    with_key = run_foundry("service", "status", home=home, env={"FOUNDRY_API_KEY": KEY})
    assert "loaded     none" in with_key.stdout


def test_a_configured_cors_origin_is_allowed_and_no_other(tmp_path: Path):
    home = tmp_path / "cors-home"
    started = run_foundry(
        "service", "start", "--api-key", KEY, "--cors-origin", "http://app.example", home=home
    )
    assert started.returncode == 0, started.stderr
    try:
        base_url = f"http://127.0.0.1:{json.loads((home / 'service.json').read_text())['port']}"
        auth = {"authorization": f"Bearer {KEY}"}
        allowed = call(base_url, "GET", "/openai/models", origin="http://app.example", **auth)
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        other = call(base_url, "GET", "/openai/models", origin="http://evil.example", **auth)
        assert "access-control-allow-origin" not in other.headers
        preflight = httpx.options(
            f"{base_url}/v1/chat/completions",
            timeout=10,
            headers={
                "origin": "http://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
    finally:
        run_foundry("service", "stop", home=home)


def test_the_anthropic_client_authenticates_with_x_api_key(keyed):
    import anthropic

    _, base_url = keyed
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=base_url, api_key=WRONG, max_retries=0).messages.create(
            model="tiny-qwen", max_tokens=4, messages=hello
        )
    with pytest.raises(anthropic.NotFoundError):  # past the key check: this service has no models
        anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0).messages.create(
            model="tiny-qwen", max_tokens=4, messages=hello
        )


# --- CSRF: a page on another site may not drive the keyless default ---------------------------
def test_a_foreign_page_cannot_start_a_pull_or_unload_the_keyless_default(service):
    """What `fetch(..., {mode: "no-cors"})` and `<img src>` from evil.example would send."""
    pull = httpx.post(
        f"{service.base_url}/api/pull",
        content=b'{"model": "no-such-model"}',
        headers={"content-type": "text/plain", "origin": "https://evil.example"},
        timeout=30,
    )
    assert pull.status_code == 403
    assert pull.json() == {"error": "origin 'https://evil.example' is not allowed"}
    image = httpx.get(
        f"{service.base_url}/openai/unloadall",
        headers={"sec-fetch-site": "cross-site", "sec-fetch-dest": "image"},
        timeout=30,
    )
    assert image.status_code == 403 and image.json()["error"]["code"] == "origin_not_allowed"
    for origin in ("null", "http://127.0.0.1.evil.example", "file://", "chrome-extension://x"):
        response = call(service.base_url, "POST", "/openai/unloadall", origin=origin)
        assert response.status_code == 403, origin


def test_the_services_own_loopback_origin_is_allowed_as_a_console_page_sends_it(service):
    for origin in (service.base_url, f"http://localhost:{service.port}", "http://[::1]:3000"):
        response = call(
            service.base_url,
            "GET",
            "/openai/loadedmodels",
            origin=origin,
            **{"sec-fetch-site": "same-origin"},
        )
        assert response.status_code == 200, origin


def test_load_unload_and_unloadall_also_answer_post(service):
    loaded = call(service.base_url, "POST", "/openai/load/tiny-qwen")
    assert loaded.status_code == 200 and loaded.json()["loaded"] is True
    assert "tiny-qwen" in call(service.base_url, "GET", "/openai/loadedmodels").json()
    unloaded = call(service.base_url, "POST", "/openai/unload/tiny-qwen")
    assert unloaded.status_code == 200 and unloaded.json()["unloaded"] is True
    # The session service is shared: earlier tests may have left other models loaded.
    unloaded_all = call(service.base_url, "POST", "/openai/unloadall").json()["unloaded"]
    assert "tiny-qwen" not in unloaded_all
    assert call(service.base_url, "GET", "/openai/loadedmodels").json() == []


def test_a_key_from_a_file_is_required_and_what_the_service_writes_is_owner_only(
    tmp_path: Path,
):
    """`--api-key-file` keeps the key off every command line; the log and state file are 0600
    in 0700 folders (the service's umask, which stored Responses get too)."""
    import stat

    home = tmp_path / "private-home"
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    started = run_foundry("service", "start", "--api-key-file", str(key_file), home=home)
    assert started.returncode == 0, started.stderr
    try:
        state = json.loads((home / "service.json").read_text())
        base_url = f"http://127.0.0.1:{state['port']}"
        assert call(base_url, "GET", "/openai/models").status_code == 401
        assert call(base_url, "GET", "/openai/models", **{"x-api-key": KEY}).status_code == 200
        assert KEY not in Path(f"/proc/{state['pid']}/cmdline").read_text(errors="replace")
        paths = [home / "service.json", home / "logs" / "service.log", home / "logs"]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
        assert modes == {"service.json": 0o600, "service.log": 0o600, "logs": 0o700}
    finally:
        run_foundry("service", "stop", home=home, env={"FOUNDRY_API_KEY": KEY})


def test_an_empty_key_file_is_one_line_saying_so(tmp_path: Path):
    (tmp_path / "key").write_text("\n")
    result = run_foundry("service", "start", "--api-key-file", str(tmp_path / "key"), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --api-key-file") and "Traceback" not in result.stderr


def test_the_sdk_never_sends_the_openai_cloud_key_to_the_local_service(
    monkeypatch: pytest.MonkeyPatch, foundry_home: Path
):
    from foundry_local import FoundryLocalManager

    monkeypatch.delenv("FOUNDRY_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cloud-secret")
    assert FoundryLocalManager(bootstrap=False).api_key != "sk-cloud-secret"
    monkeypatch.setenv("FOUNDRY_API_KEY", KEY)
    assert FoundryLocalManager(bootstrap=False).api_key == KEY


# --- every route the app has, not a hand list -------------------------------------------------
CONSOLE_FILE = sorted(
    p.name for p in (Path(__file__).parents[1] / "runtime/service/console").iterdir()
)[0]


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route `create_app` builds, path parameters filled in."""
    import re

    from runtime.service.app import create_app
    from runtime.service.settings import ServiceSettings

    routes = []
    for route in create_app(ServiceSettings()).routes:
        fill = CONSOLE_FILE if route.path.startswith("/console/") else "tiny-qwen"
        path = re.sub(r"\{[^}]+\}", fill, route.path)
        routes.extend((method, path) for method in sorted(set(route.methods) - {"OPTIONS", "HEAD"}))
    return routes


ALL_ROUTES = app_routes()
ALL_IDS = [f"{method} {path}" for method, path in ALL_ROUTES]


def test_the_route_table_is_what_the_coverage_tests_walk():
    assert len(ALL_ROUTES) >= 35 and ("GET", "/health") in ALL_ROUTES


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES, ids=ALL_IDS)
def test_every_route_of_the_app_refuses_a_missing_and_a_wrong_key(keyed, method, path):
    from runtime.service.security import is_open_path

    _, base_url = keyed
    if is_open_path(path):  # liveness and the console's static files: no key, never a 401
        assert call(base_url, method, path).status_code == 200
        return
    for headers in ({}, {"authorization": f"Bearer {WRONG}"}, {"x-api-key": WRONG}):
        response = call(base_url, method, path, {"model": "tiny-qwen"}, **headers)
        assert response.status_code == 401, (headers, response.text[:200])


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES, ids=ALL_IDS)
def test_every_route_of_the_keyless_default_refuses_a_cross_origin_request(service, method, path):
    from runtime.service.security import is_open_path

    response = call(service.base_url, method, path, {"model": "x"}, origin="https://evil.example")
    if is_open_path(path) and method == "GET":  # read-only pages: harmless from anywhere
        assert response.status_code == 200
        return
    assert response.status_code == 403, response.text[:200]
    cross_site = call(
        service.base_url, method, path, {"model": "x"}, **{"sec-fetch-site": "cross-site"}
    )
    assert cross_site.status_code == 403, cross_site.text[:200]
