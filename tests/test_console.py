"""The web console at `/`, driven in a real browser (Debian's chromium through chromium-driver).

One headless chromium per module, against the session service (tiny-qwen built by
foundry-build) and against a keyed service that downloads from the local hub. Each page is
saved as a screenshot (in $CONSOLE_SCREENSHOTS if set, else a temp folder) for a person to look
at: the README's pictures come from here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningService, run_foundry

from tests.hub_server import HubServer, RemoteRepo
from tests.test_download import MODEL_ID, REPO, SUBFOLDER  # the hub repo test_download serves

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = (
    "the browser tests need Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run installs them)"
)

KEY = "sk-console-5d1f0a"
HUB_CATALOG = f"""\
schema: 1
models:
  - alias: tiny-qwen
    name: tiny-qwen
    display_name: Tiny Qwen (random weights)
    publisher: Test
    license: apache-2.0
    task: chat
    family: qwen2
    max_output_tokens: 64
    context_length: 512
    variants:
      - {{device: cpu, provider: cpu, precision: fp32, size: 3000000,
         artifact: {{repo: {REPO}, revision: main, subfolder: {SUBFOLDER}}}}}
      - {{device: gpu, provider: cuda, precision: fp16, size: 3000000,
         artifact: {{repo: {REPO}, revision: main, subfolder: cuda-fp16}}}}
"""


# --- the browser -------------------------------------------------------------------------------
class Browser:
    """One headless chromium session and the few verbs these tests need."""

    def __init__(self, driver: Any, shots: Path):
        self.driver = driver
        self.shots = shots

    def size(self, width: int, height: int, dark: bool = False) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        scheme = [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": scheme})

    def open(self, base_url: str, page: str) -> None:
        """Load the console on `page` and wait until that page has drawn its data."""
        self.driver.get(f"{base_url}/#{page}")
        self.driver.refresh()  # a hash-only change would not reload the modules
        self.wait(lambda: self.js("return document.body.dataset.ready") == page)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def wait(self, condition: Callable[[], Any], timeout: float = 30) -> Any:
        """Poll `condition` until truthy; elements redrawn meanwhile are looked up again."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        redrawn = (NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(
            self.driver, timeout, poll_frequency=0.05, ignored_exceptions=redrawn
        ).until(lambda _driver: condition())

    def type(self, selector: str, text: str) -> None:
        field = self.css(selector)
        field.clear()
        field.send_keys(text)

    def errors(self) -> list[str]:
        """SEVERE browser log entries since the last call (failed loads, CSP refusals, JS errors)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("console-shots"))
    shots.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser = Browser(driver, shots)
    browser.size(1280, 800)
    yield browser
    driver.quit()


def _gauge(base_url: str, name: str, **headers: str) -> float:
    for line in httpx.get(f"{base_url}/metrics", headers=headers).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# --- the page itself ---------------------------------------------------------------------------
def test_console_loads_under_a_strict_content_security_policy(service: RunningService, browser):
    page = httpx.get(f"{service.base_url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "no inline script"
    assert not re.search(r"\bstyle=|<style", page.text), "no inline style"
    assert "http://" not in page.text and "https://" not in page.text, "no third-party origin"
    script = httpx.get(f"{service.base_url}/console/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{service.base_url}/console/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{service.base_url}/console/nothing.js").json()["error"]["type"] == (
        "not_found_error"
    )

    browser.open(service.base_url, "chat")
    assert browser.css("#service-state").get_attribute("class") == "service-state up"
    assert browser.errors() == []


def test_chat_streams_a_reply_with_token_counts_and_keeps_the_conversation(
    service: RunningService, service_model: str, browser
):
    browser.open(service.base_url, "chat")
    browser.css("#new-chat").click()
    browser.wait(lambda: service_model in browser.css("#chat-model").get_attribute("value"))
    browser.css("details.settings summary").click()
    browser.type("#system-prompt", "You are terse.")
    browser.type("#temperature", "0")
    browser.type("#max-tokens", "24")
    browser.type("#prompt", "Say **hi** <img src=x onerror=alert(1)>\n")

    stats = browser.wait(lambda: browser.all(".message.assistant .stats .tok-s"))
    assert re.fullmatch(r"[\d.]+ tok/s", stats[0].text)
    assert float(browser.css(".message.assistant .stats").get_attribute("data-tok-per-sec")) > 0
    assert "reply 24 tok" in browser.css(".message.assistant .stats").text  # from usage
    assert browser.css(".message.assistant .content").text.strip()
    user = browser.css(".message.user .body")
    assert "<img src=x onerror=alert(1)>" in user.text  # shown as text, never markup
    assert browser.all(".messages img") == []
    browser.shot("chat")

    saved = json.loads(browser.js("return localStorage.getItem('foundry.conversations')"))
    assert saved[0]["messages"][0]["content"].startswith("Say **hi**")
    browser.open(service.base_url, "chat")  # a reload keeps the conversation
    assert browser.css(".conversation-list li.current").text.startswith("Say **hi**")
    assert len(browser.all(".message.assistant")) == 1
    browser.size(420, 800)
    browser.shot("chat-narrow")
    browser.size(1280, 800)
    assert browser.errors() == []


def test_stop_cancels_the_generation_in_the_service(
    service: RunningService, service_model: str, browser
):
    from selenium.webdriver.support.ui import Select

    browser.open(service.base_url, "chat")
    browser.css("#new-chat").click()
    Select(browser.css("#chat-model")).select_by_value(service_model)  # its context holds 20000
    browser.css("details.settings summary").click()
    browser.type("#max-tokens", "20000")
    browser.type("#temperature", "0")  # greedy: sampling may draw the end token early
    tokens_before = _gauge_total(service.base_url)
    browser.type("#prompt", "Tell me a very long story\n")
    browser.wait(lambda: browser.css("#stop").is_displayed())
    browser.wait(lambda: _gauge(service.base_url, "foundry_generating_requests") >= 1)
    browser.css("#stop").click()

    assert browser.wait(lambda: browser.all(".message.assistant .stats .pill.warn"))[0].text == (
        "stopped"
    )
    deadline = time.monotonic() + 20
    while _gauge(service.base_url, "foundry_generating_requests") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gauge(service.base_url, "foundry_generating_requests") == 0
    assert _gauge(service.base_url, "foundry_queue_depth") == 0
    # The service stopped decoding well short of the 20000 tokens asked for.
    assert _gauge_total(service.base_url) - tokens_before < 20000
    assert browser.css("#send").is_displayed()


def _gauge_total(base_url: str) -> float:
    stats = httpx.get(f"{base_url}/foundry/stats").json()
    return stats["totals"]["completion_tokens"]


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def test_reasoning_is_folded_and_tool_calls_are_shown_as_calls(
    service: RunningService, agent_models, browser
):
    from selenium.webdriver.support.ui import Select

    browser.open(service.base_url, "chat")
    browser.css("#new-chat").click()
    Select(browser.css("#chat-model")).select_by_value("agents-r1")
    browser.css("details.settings summary").click()
    browser.type("#max-tokens", "12")
    browser.type("#temperature", "0")
    browser.type("#prompt", "What is 2+3?\n")
    browser.wait(lambda: browser.all(".message.assistant .stats .tok-s"))
    reasoning = browser.css(".message.assistant details.reasoning")
    assert reasoning.is_displayed() and reasoning.get_attribute("open") is None  # folded
    reasoning.find_element("css selector", "summary").click()
    assert reasoning.find_element("css selector", ".reasoning-text").text.strip()

    browser.css("#new-chat").click()
    Select(browser.css("#chat-model")).select_by_value("agents-qwen")
    browser.type("#tools", json.dumps([ADD_TOOL]))
    Select(browser.css("#tool-choice")).select_by_value("required")
    browser.type("#max-tokens", "200")
    browser.type("#prompt", "Add 2 and 3\n")
    browser.wait(lambda: "finish:" in browser.css(".message.assistant .stats").text)
    call = browser.css(".message.assistant .tool-call")
    assert call.find_element("css selector", ".tool-name").text == "tool call: add"
    arguments = json.loads(call.find_element("css selector", "pre").text)
    assert set(arguments) == {"a", "b"} and all(isinstance(v, int) for v in arguments.values())
    assert "finish: tool_calls" in browser.css(".message.assistant .stats").text
    browser.shot("chat-tools")
    browser.type("#tools", "")
    assert browser.errors() == []


HOSTILE_MARKDOWN = """# Title
Some **bold**, *em* and `code`; <script>window.__pwned = 1</script>
<img src=x onerror="window.__pwned = 2">
[safe](https://example.org/a) and [evil](javascript:window.__pwned=3)

```python
print("<b>not bold</b>")
```
- one
- two
"""


SAFE_TAGS = {"h2", "p", "strong", "em", "code", "br", "a", "div", "span", "pre", "ul", "li"}


def test_replies_render_markdown_and_code_but_never_markup(service: RunningService, browser):
    browser.open(service.base_url, "chat")
    rendered = browser.driver.execute_async_script(
        """const done = arguments[1];
        import('/console/markdown.js').then(({ renderMarkdown }) => {
            const box = document.createElement('div');
            box.append(renderMarkdown(arguments[0]));
            document.body.append(box);
            const tags = [...box.querySelectorAll('*')].map(e => e.tagName.toLowerCase());
            const links = [...box.querySelectorAll('a')].map(a => a.getAttribute('href'));
            const code = box.querySelector('pre code').textContent;
            box.remove();
            done({ tags: [...new Set(tags)].sort(), links, code, pwned: window.__pwned || 0 });
        });""",
        HOSTILE_MARKDOWN,
    )
    assert set(rendered["tags"]) <= SAFE_TAGS
    assert "script" not in rendered["tags"] and "img" not in rendered["tags"]
    assert rendered["links"] == ["https://example.org/a"]  # javascript: stays text
    assert rendered["code"] == 'print("<b>not bold</b>")'
    assert rendered["pwned"] == 0
    assert browser.errors() == []


# --- models, builds, health ----------------------------------------------------------------------
def test_models_page_explains_the_choice_and_loads_and_unloads(
    service: RunningService, service_model: str, browser
):
    browser.open(service.base_url, "models")
    assert "providers cpu" in browser.css("#hardware-summary").text
    picked = browser.css('tr.picked[data-variant="qwen2.5-0.5b-instruct-cpu-int4:1"]')
    assert "CPUExecutionProvider" in picked.text and "picked: cpu is the best device" in picked.text
    fp32 = browser.css('tr[data-variant="qwen2.5-0.5b-instruct-cpu-fp32:1"] .reason')
    assert fp32.text == "runs here; qwen2.5-0.5b-instruct-cpu-int4:1 comes first in the catalog"
    gpu = browser.css('tr[data-variant="qwen2.5-0.5b-instruct-gpu-int4:1"] .reason')
    assert gpu.text == "needs the cuda provider; found here: cpu"
    browser.shot("models")

    row = f'[data-alias="local"] tr[data-variant="{service_model}"]'
    httpx.get(f"{service.base_url}/openai/unload/{service_model}", params={"force": "true"})
    browser.open(service.base_url, "models")
    assert browser.css(f"{row} .state").text == "cached"
    browser.css(f"{row} .variant-actions input").send_keys("900")
    browser.css(f"{row} .variant-actions button").click()
    browser.wait(lambda: browser.css(f"{row} .state").text.startswith("loaded · unloads in"))
    assert service_model in httpx.get(f"{service.base_url}/openai/loadedmodels").json()
    browser.css(f"{row} .variant-actions button").click()  # Unload
    browser.wait(lambda: browser.css(f"{row} .state").text == "cached")
    assert browser.errors() == []


def test_builds_page_shows_the_build_record_and_its_raw_json(
    service: RunningService, service_model: str, browser
):
    builds = httpx.get(f"{service.base_url}/foundry/builds").json()
    record = next(b for b in builds if b["id"] == service_model)["build"]
    browser.open(service.base_url, "builds")
    card = f'.build-card[data-model="{service_model}"]'
    text = browser.css(card).text
    assert "cpu-fp32" in text and record["source"] in text and "Peak memory" in text
    assert "onnxruntime-genai" in text and "token_agreement" in text
    browser.shot("builds")
    browser.css(f"{card} details.raw summary").click()
    raw = browser.css(f"{card} details.raw pre").text
    assert json.loads(raw) == record


def test_health_page_charts_tokens_per_second_from_the_service_metrics(
    service: RunningService, service_model: str, openai_client, browser
):
    refused = httpx.get(f"{service.base_url}/openai/load/{service_model}", params={"ep": "cuda"})
    assert refused.status_code == 501  # the service logs it as a warning
    browser.open(service.base_url, "health")
    logged = browser.css(".log").text
    assert "ProviderUnavailable: execution provider 'cuda' is not available here" in logged
    chart = '[data-chart="tokens"]'

    def samples() -> int:
        return int(browser.css(chart).get_attribute("data-samples") or 0)

    # Keep the model busy across a few 2 s samples, so the chart has a line to draw.
    start = samples()
    while samples() < start + 3:
        openai_client.chat.completions.create(
            model=service_model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=400,
            extra_body={"ignore_eos": True},
        )
    now = browser.css(f"{chart} .now").text
    assert re.fullmatch(r"[\d.]+ tok/s", now) and float(now.split()[0]) > 0
    assert re.fullmatch(r"\d+ ms|[\d.]+ s", browser.css('[data-chart="ttft"] .now').text)
    assert service_model in browser.css('[data-tile="loaded"]').text
    assert "cpu" in browser.css('[data-tile="service"]').text
    assert browser.css('[data-tile="queue"] .value').text == "0"
    browser.shot("health")
    browser.size(1280, 800, dark=True)
    drawn = samples()
    browser.wait(lambda: samples() > drawn)  # one more sample drawn in the dark palette
    browser.shot("health-dark")
    browser.size(1280, 800)
    assert browser.errors() == []


# --- a keyed service: the key prompt, then a download with live progress ------------------------
@pytest.fixture(scope="module")
def keyed_hub_service(
    tmp_path_factory: pytest.TempPathFactory, genai_artifact
) -> Iterator[RunningService]:
    """`foundry service start --api-key KEY` whose catalog downloads tiny-qwen from a local hub."""
    home = tmp_path_factory.mktemp("console-keyed-home")
    (home / "catalog").mkdir()
    (home / "catalog" / "test.yaml").write_text(HUB_CATALOG)
    with HubServer() as hub:
        hub.add(RemoteRepo.from_folder(REPO, genai_artifact("qwen2.5-0.5b"), prefix=SUBFOLDER))
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": ""}
        started = run_foundry("service", "start", "--api-key", KEY, home=home, env=env)
        assert started.returncode == 0, started.stderr
        assert re.search(r"^Console: http://127\.0\.0\.1:\d+/", started.stdout, re.M)
        yield RunningService(home)
        run_foundry("service", "stop", home=home)


def test_keyed_console_asks_for_the_key_and_works_after_it(keyed_hub_service, browser):
    base_url = keyed_hub_service.base_url
    assert httpx.get(f"{base_url}/").status_code == 200  # the page itself needs no key
    assert httpx.get(f"{base_url}/console/app.js").status_code == 200
    for path in ("/foundry/stats", "/foundry/catalog", "/foundry/builds"):  # its data does
        assert httpx.get(f"{base_url}{path}").status_code == 401
    browser.driver.get(f"{base_url}/#models")
    dialog = browser.wait(lambda: browser.css("#key-dialog").get_attribute("open") is not None)
    assert dialog
    assert browser.css("#service-state").text == "connecting…"
    browser.shot("key-prompt")
    refused = browser.driver.execute_async_script(
        "fetch('/foundry/stats').then(r => arguments[0](r.status))"
    )
    assert refused == 401

    browser.type("#key-input", "sk-wrong")
    browser.css("#key-submit").click()
    browser.wait(lambda: "not valid" in browser.css("#key-error").text)
    browser.type("#key-input", KEY)
    browser.css("#key-submit").click()
    browser.wait(lambda: browser.js("return document.body.dataset.ready") == "models")
    assert browser.css("#key-dialog").get_attribute("open") is None
    assert browser.js("return sessionStorage.getItem('foundry.apiKey')") == KEY
    assert KEY not in browser.driver.current_url
    browser.errors()  # the two refused calls logged 401s; nothing after them may fail


def test_download_from_the_models_page_shows_progress_to_100_percent(keyed_hub_service, browser):
    base_url = keyed_hub_service.base_url
    browser.driver.get(f"{base_url}/")
    browser.js("sessionStorage.setItem('foundry.apiKey', arguments[0])", KEY)  # as typed once
    browser.errors()  # the keyless first load was refused, as it should be
    browser.open(base_url, "models")
    row = f'tr[data-variant="{MODEL_ID}"]'
    assert browser.css(f"{row} .state").text == "not cached"
    browser.js(
        """window.__seen = [];
        new MutationObserver(() => document.querySelectorAll('progress').forEach(
            p => window.__seen.push(Number(p.value)))).observe(document.body,
            {subtree: true, childList: true, attributes: true});"""
    )
    browser.css(f"{row} .variant-actions button").click()
    browser.wait(lambda: browser.css(f"{row} .state").text == "cached", timeout=120)
    assert browser.css(f"{row} progress").get_attribute("value") == "100"
    seen = browser.js("return window.__seen")
    assert max(seen) == 100 and any(0 < v < 100 for v in seen)  # it moved as bytes arrived
    browser.shot("models-downloaded")
    headers = {"authorization": f"Bearer {KEY}"}
    models = httpx.get(f"{base_url}/openai/models", headers=headers).json()
    assert MODEL_ID in models
    assert browser.errors() == []


def test_foundry_console_opens_the_default_browser_on_the_console(keyed_hub_service, tmp_path):
    opened = tmp_path / "opened.txt"
    fake_browser = tmp_path / "fake-browser"
    fake_browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake_browser.chmod(0o755)
    result = keyed_hub_service.cli("console", env={"BROWSER": str(fake_browser)})
    assert result.returncode == 0, result.stderr
    url = f"{keyed_hub_service.base_url}/"
    assert result.stdout.strip() == f"Console: {url}"
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened.read_text().strip() == url


def test_no_console_serves_the_api_without_the_page(tmp_path):
    home = tmp_path / "home"
    started = run_foundry("service", "start", "--no-console", home=home)
    try:
        assert started.returncode == 0, started.stderr
        assert "Console:" not in started.stdout
        service = RunningService(home)
        assert httpx.get(f"{service.base_url}/").status_code == 404
        assert httpx.get(f"{service.base_url}/console/app.js").status_code == 404
        assert httpx.get(f"{service.base_url}/v1/models").status_code == 200
        refused = service.cli("console")
        assert refused.returncode == 3
        assert refused.stderr.startswith("error: the service at ")
        assert "--no-console" in refused.stderr
    finally:
        run_foundry("service", "stop", home=home)
