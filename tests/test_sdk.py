"""The Python SDKs against the real service: ours (`foundry_local`) and Foundry Local's own
published HTTP SDK (`foundry-local-sdk` 0.5.x, installed into a separate environment because
it shares the `foundry_local` import name). Both start the service themselves, as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.hub_server import HubServer, RemoteRepo
from tests.test_download import CATALOG as TEST_CATALOG
from tests.test_download import REPO, SUBFOLDER

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_SDK = "foundry-local-sdk==0.5.1"

# The snippet from Foundry Local's documentation, unchanged but for the prompt.
DOCS_SNIPPET = """
import openai
from foundry_local import FoundryLocalManager
manager = FoundryLocalManager("qwen2.5-0.5b")
client = openai.OpenAI(base_url=manager.endpoint, api_key=manager.api_key)
reply = client.chat.completions.create(
    model=manager.get_model_info("qwen2.5-0.5b").id,
    messages=[{"role": "user", "content": "Why is the sky blue?"}],
    max_tokens=8,
)
print(json.dumps({"model": reply.model, "usage": reply.usage.completion_tokens, "endpoint": manager.endpoint,
                  "cached": [m.id for m in manager.list_cached_models()],
                  "loaded": [m.id for m in manager.list_loaded_models()],
                  "cache": manager.get_cache_location()}))
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"FOUNDRY_API_KEY", "PYTHONPATH"}}
    return {
        **env,
        "FOUNDRY_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    }


def _run(cmd: list[str], home: Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=_env(home, **extra), cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def synthetic_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FOUNDRY_HOME where `foundry-build qwen2.5-0.5b --synthetic` registered the catalog's CPU variant."""
    home = tmp_path_factory.mktemp("sdk-home")
    built = _run(
        [
            str(BIN / "foundry-build"),
            "qwen2.5-0.5b",
            "--synthetic",
            "--layers",
            "2",
            "--hidden",
            "64",
            "--json",
        ],
        home,
        home,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    yield home
    _run([str(BIN / "foundry"), "service", "stop"], home, home)


def test_foundry_docs_snippet_runs_unchanged_offline_on_a_synthetic_build(
    synthetic_home: Path, tmp_path: Path
):
    listed = _run([str(BIN / "foundry"), "model", "list", "--json"], synthetic_home, tmp_path)
    row = next(
        r
        for r in json.loads(listed.stdout)["models"]
        if r["id"] == "qwen2.5-0.5b-instruct-cpu-int4:1"
    )
    assert row["synthetic"] is True  # the user is told the weights are random

    ran = _run(
        [sys.executable, "-c", "import json\n" + DOCS_SNIPPET],
        synthetic_home,
        tmp_path,
        HF_HUB_OFFLINE="1",
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["model"] == "qwen2.5-0.5b-instruct-cpu-int4:1"
    assert 1 <= seen["usage"] <= 8
    assert seen["endpoint"].startswith("http://127.0.0.1:") and seen["endpoint"].endswith("/v1")
    assert seen["cached"] == seen["loaded"] == ["qwen2.5-0.5b-instruct-cpu-int4:1"]
    assert seen["cache"] == str(synthetic_home / "cache")


def test_sdk_get_model_info_picks_the_alias_variant_for_this_hardware(
    synthetic_home: Path, tmp_path: Path
):
    script = """
from foundry_local import FoundryLocalManager
m = FoundryLocalManager()
info = m.get_model_info("qwen2.5-0.5b")
print(info.id, info.device_type, info.execution_provider, info.task, info.license)
print(m.get_model_info("no-such-model"))
try:
    m.get_model_info("no-such-model", raise_on_not_found=True)
except LookupError as exc:
    print("raised", type(exc).__name__)
"""
    ran = _run([sys.executable, "-c", script], synthetic_home, tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.splitlines() == [
        "qwen2.5-0.5b-instruct-cpu-int4:1 CPU CPUExecutionProvider chat-completion apache-2.0",
        "None",
        "raised ModelNotFound",
    ]


# --- Foundry Local's published SDK ---------------------------------------------------------------
@pytest.fixture(scope="session")
def published_sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of a venv holding foundry-local-sdk 0.5.x (`.ci/run` prepares `.venv-flsdk`; else built here
    from the package registry, the only network this machine has)."""
    prepared = REPO_ROOT / ".venv-flsdk" / "bin" / "python"
    constraints = REPO_ROOT / "constraints.txt"  # the README's pins apply to this venv too
    if prepared.exists():
        return prepared
    target = tmp_path_factory.mktemp("flsdk") / "venv"
    venv.create(target, with_pip=True)
    subprocess.run(
        [
            str(target / "bin" / "pip"),
            "install",
            "-q",
            "-c",
            str(constraints),
            PUBLISHED_SDK,
            "openai",
        ],
        check=True,
        timeout=600,
    )
    return target / "bin" / "python"


PUBLISHED_SCRIPT = """
import json, sys
import openai
from foundry_local import FoundryLocalManager
assert FoundryLocalManager.__module__ == "foundry_local.api" and "site-packages" in sys.modules["foundry_local"].__file__
manager = FoundryLocalManager()                    # bootstrap: runs `foundry service start`
catalog = manager.list_catalog_models()
info = manager.download_model("tiny-qwen")         # POST /openai/download, progress lines, final JSON
manager.load_model("tiny-qwen", ttl=300)
client = openai.OpenAI(base_url=manager.endpoint, api_key=manager.api_key)
reply = client.chat.completions.create(model=info.id, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
loaded = [m.id for m in manager.list_loaded_models()]
manager.unload_model("tiny-qwen")
print(json.dumps({"catalog": len(catalog), "aliases": sorted({m.alias for m in catalog}), "id": info.id,
                  "reply_tokens": reply.usage.completion_tokens, "cached": [m.id for m in manager.list_cached_models()],
                  "loaded": loaded, "after_unload": [m.id for m in manager.list_loaded_models()]}))
"""


def test_published_foundry_local_sdk_starts_lists_downloads_loads_and_unloads(
    published_sdk_python: Path, tiny_source, tmp_path: Path
):
    home = tmp_path / "home"
    build_home = tmp_path / "build-home"
    built = _run(
        [
            str(BIN / "foundry-build"),
            str(tiny_source("qwen2.5-0.5b")),
            "--target",
            "cpu-fp32",
            "--as",
            "tiny",
            "--json",
        ],
        build_home,
        tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    artifact = Path(json.loads(built.stdout)["models"][0]["path"])
    (home / "catalog").mkdir(parents=True)
    (home / "catalog" / "test.yaml").write_text(TEST_CATALOG)  # tiny-qwen, served from REPO
    with HubServer() as hub:
        hub.add(RemoteRepo.from_folder(REPO, artifact, prefix=SUBFOLDER))
        try:
            ran = _run(
                [str(published_sdk_python), "-c", PUBLISHED_SCRIPT],
                home,
                tmp_path,
                HF_ENDPOINT=hub.endpoint,
            )
        finally:
            _run([str(BIN / "foundry"), "service", "stop"], home, tmp_path)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["id"] == "tiny-qwen-cpu-fp32:1"
    assert {"tiny-qwen", "qwen2.5-0.5b", "phi-3.5-mini", "whisper-tiny"} <= set(seen["aliases"])
    assert seen["reply_tokens"] == 4
    assert seen["cached"] == ["tiny-qwen-cpu-fp32:1"]
    assert seen["loaded"] == ["tiny-qwen-cpu-fp32:1"] and seen["after_unload"] == []
