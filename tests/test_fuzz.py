"""Schemathesis fuzzes every route of the service's own /openapi.json (issue 12).

The real service (`foundry service start`, loopback, an API key) serves a tiny synthetic Qwen
whose context is FUZZ_CONTEXT tokens, so no case can generate for long whatever its length
fields say, the real all-MiniLM-L6-v2 and a tiny synthetic Whisper; schemathesis reads the
document through the key and generates bodies from it in positive and negative modes
(examples, coverage, fuzzing and stateful phases; tests/fuzz_hooks.py points positive bodies
at the served models, audio ones with a real WAV). The checks: no 5xx, every status, content
type, header and body the document declares (success bodies included: each route declares
its Struct), negative data refused, each case under REQUEST_TIMEOUT seconds; `/health`
answers afterwards, and each media route answered a 200. The bounded run here is
FUZZ_EXAMPLES examples per operation and mode; the README's developer part gives the deeper run
(`FOUNDRY_FUZZ_EXAMPLES=200`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import (
    MINILM,
    WHISPER,
    RunningService,
    build_models,
    minilm_source,
    run_foundry,
)

FUZZ_MODEL = "tiny-fuzz"
FUZZ_CONTEXT = 256  # tokens: the most any case can prefill plus generate
FUZZ_KEY = "fuzz-key"
FUZZ_EXAMPLES = int(os.environ.get("FOUNDRY_FUZZ_EXAMPLES", "8"))
REQUEST_TIMEOUT = 30.0  # seconds per case: a hang fails the run
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)
# A fuzzed name never matches a catalog model, and the hub is offline: nothing downloads.
CONFIG = Path(__file__).with_name("schemathesis.toml")  # 503 allowed on the download routes
TARGET = ("--target", "cpu-fp32", "--as", FUZZ_MODEL)
OFFLINE = {"HF_HUB_OFFLINE": "1", "FOUNDRY_API_KEY": FUZZ_KEY}
HOOKS = Path(__file__).with_name("fuzz_hooks.py")  # media cases name the served models
MEDIA = ("/v1/embeddings", "/v1/audio/transcriptions", "/v1/audio/translations")


@pytest.fixture(scope="module")
def fuzz_service(tiny_source, tmp_path_factory: pytest.TempPathFactory):
    """The real service over one tiny Qwen with a FUZZ_CONTEXT-token context, the real MiniLM
    and a tiny synthetic Whisper, behind a key."""
    home = tmp_path_factory.mktemp("fuzz-home")
    source = tmp_path_factory.mktemp("fuzz-source") / "qwen"
    subprocess.run(["cp", "-r", str(tiny_source("qwen2.5-0.5b")), str(source)], check=True)
    config = json.loads((source / "config.json").read_text())
    config["max_position_embeddings"] = FUZZ_CONTEXT
    (source / "config.json").write_text(json.dumps(config))
    build = subprocess.run(
        [str(Path(sys.executable).with_name("foundry-build")), str(source), *TARGET],
        env={**os.environ, "FOUNDRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    build_models(home, minilm_source(), {"cpu-fp32": MINILM})
    build_models(home, tiny_source("whisper-tiny"), {"cpu-fp32": WHISPER})
    started = run_foundry("service", "start", "--ttl", "600", home=home, env=OFFLINE)
    assert started.returncode == 0, started.stderr + started.stdout
    yield RunningService(home)
    run_foundry("service", "stop", home=home, env=OFFLINE)


def schemathesis_args(service: RunningService, mode: str) -> list[str]:
    """`schemathesis run` against `service`: every route but DELETE /api/delete (it would
    delete the one model the other cases need once the stateful phase learns its name)."""
    base = service.base_url
    timeout = str(REQUEST_TIMEOUT)
    return [
        *(
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--wait-for-schema",
            "30",
        ),
        *("-H", f"Authorization: Bearer {FUZZ_KEY}", "--exclude-path", "/api/delete"),
        *("--mode", mode, "-n", str(FUZZ_EXAMPLES), "--seed", "12", "--workers", "1"),
        *("--phases", "examples,coverage,fuzzing,stateful", "--checks", CHECKS),
        *("--request-timeout", timeout, "--max-response-time", timeout),
        *("--no-color", "--suppress-health-check", "all"),
    ]


def _schemathesis(service: RunningService, mode: str, calls: Path) -> subprocess.CompletedProcess:
    schemathesis = str(Path(sys.executable).with_name("schemathesis"))
    hooks = {
        "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
        "FUZZ_CALL_LOG": str(calls),
        "FUZZ_MODE": mode,
    }
    served = {"FUZZ_CHAT_MODEL": FUZZ_MODEL, "FUZZ_EMBEDDING_MODEL": MINILM}
    served["FUZZ_SPEECH_MODEL"] = WHISPER
    return subprocess.run(
        [schemathesis, *schemathesis_args(service, mode)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "NO_COLOR": "1", **hooks, **served},
        cwd=HOOKS.parent.parent,
    )


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_route_survives_schemathesis(fuzz_service: RunningService, mode, tmp_path):
    started = time.monotonic()
    calls = tmp_path / "calls.log"
    run = _schemathesis(fuzz_service, mode, calls)
    took = time.monotonic() - started
    summary = run.stdout[-20000:]
    answered = Counter(calls.read_text().splitlines() if calls.exists() else [])
    media = {call: n for call, n in sorted(answered.items()) if call.split()[1] in MEDIA}
    print(f"schemathesis {mode}: {took:.0f} s, media route answers {media}\n{summary}")
    assert run.returncode == 0, summary + run.stderr[-2000:]
    # Every operation of the document was reached (all but the one left out), with cases.
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", run.stdout)
    assert selected and int(selected[1]) == int(selected[2]) - 1 >= 40, summary
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated and int(generated[1]) >= 10 * int(selected[1]), summary
    request = urllib.request.Request(
        f"{fuzz_service.base_url}/health", headers={"Authorization": f"Bearer {FUZZ_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    if mode == "positive":  # the media routes' success paths were reached, not only their 4xx
        for path in MEDIA:
            assert any(c.split()[1:] == [path, "200"] for c in answered), (path, media)
