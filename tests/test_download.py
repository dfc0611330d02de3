"""Downloads with the real huggingface_hub client against a local hub on loopback (tests/hub_server.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.errors import (
    DownloadCorrupt,
    ModelNotFound,
    NotInstalled,
    Offline,
    ProviderUnavailable,
)
from runtime.progress import ProgressEvent
from runtime.store import Store
from tests.hub_server import HubServer, RemoteRepo

REPO = "test-org/tiny-qwen-onnx"
SUBFOLDER = "cpu_and_mobile/cpu-fp32"
BIG_FILE = f"{SUBFOLDER}/model.onnx.data"
MODEL_ID = "tiny-qwen-cpu-fp32:1"
FOUNDRY = str(Path(sys.executable).with_name("foundry"))

CATALOG = f"""\
schema: 1
models:
  - alias: tiny-qwen
    name: tiny-qwen
    display_name: Tiny Qwen (random weights)
    publisher: Test
    license: apache-2.0
    task: chat
    family: qwen2
    supports_tool_calling: true
    tool_parser: qwen
    max_output_tokens: 64
    context_length: 512
    prompt_template: {{prompt: "<|im_start|>user\\n{{Content}}<|im_end|>\\n<|im_start|>assistant"}}
    variants:
      - {{device: cpu, provider: cpu, precision: fp32, size: 3000000,
         artifact: {{repo: {REPO}, revision: main, subfolder: {SUBFOLDER}}}}}
      - {{device: gpu, provider: cuda, precision: fp16, size: 3000000,
         artifact: {{repo: {REPO}, revision: main, subfolder: cuda-fp16}}}}
  - alias: gone-model
    name: gone-model
    display_name: A model the hub does not have
    publisher: Test
    license: MIT
    task: chat
    family: qwen2
    max_output_tokens: 64
    context_length: 512
    variants:
      - {{device: cpu, provider: cpu, precision: int4, size: 1000,
         artifact: {{repo: test-org/not-there, revision: main, subfolder: cpu}}}}
  - alias: source-only
    name: source-only
    display_name: Compiled from a checkpoint
    publisher: Test
    license: MIT
    task: chat
    family: qwen2
    max_output_tokens: 64
    context_length: 512
    variants:
      - {{device: cpu, provider: cpu, precision: int4, size: 1000,
         checkpoint: {{repo: test-org/tiny-qwen, revision: main}}}}
"""


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real onnxruntime-genai folder (2 layers, hidden 64, random weights), built once per session."""
    from compiler.synthetic import synthetic_source

    root = tmp_path_factory.mktemp("tiny-artifact")
    source = synthetic_source("qwen2.5-0.5b", root / "source", layers=2, hidden=64)
    out = root / "onnx"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(source),
            "-o",
            str(out),
            "-p",
            "fp32",
            "-e",
            "cpu",
            "-c",
            str(root / "cache"),
        ],
        check=True,
        capture_output=True,
    )
    assert (out / "model.onnx.data").stat().st_size > 2_000_000  # big enough to cut mid-file
    return out


@pytest.fixture
def hub(tiny_artifact: Path, foundry_home: Path, monkeypatch: pytest.MonkeyPatch):
    """The local hub serving the artifact, HF_ENDPOINT pointing at it, and the test catalog installed."""
    (foundry_home / "catalog").mkdir()
    (foundry_home / "catalog" / "test.yaml").write_text(CATALOG)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as server:
        server.add(RemoteRepo.from_folder(REPO, tiny_artifact, prefix=SUBFOLDER))
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def run_foundry(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FOUNDRY, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def refs(home: Path) -> list[str]:
    folder = home / "cache" / "refs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def partials(home: Path) -> list[Path]:
    folder = home / "downloads"
    return sorted(folder.iterdir()) if folder.exists() else []


# --- the happy path ------------------------------------------------------------------------------
def test_download_registers_the_verified_artifact_under_the_variant_id(
    hub: HubServer, tiny_artifact: Path
) -> None:
    from runtime.download import download

    events: list[ProgressEvent] = []
    cached = download("tiny-qwen", Store(), events.append)
    assert cached.model_id == MODEL_ID
    for path in tiny_artifact.iterdir():
        assert (cached.path / path.name).read_bytes() == path.read_bytes()
    assert json.loads((cached.path / "inference_model.json").read_text())["Name"] == MODEL_ID
    meta = cached.metadata
    assert (meta["alias"], meta["task"], meta["family"], meta["target"], meta["provider"]) == (
        "tiny-qwen",
        "chat",
        "qwen2",
        "cpu-fp32",
        "cpu",
    )
    assert meta["source"] == f"hf://{REPO}@{hub.repos[REPO].sha}/{SUBFOLDER}"
    total = sum(p.stat().st_size for p in tiny_artifact.iterdir())
    byte_events = [e for e in events if e.phase == "download" and e.total]
    assert byte_events[-1].completed == total == byte_events[-1].total
    assert partials(Path(os.environ["FOUNDRY_HOME"])) == []


def test_downloaded_model_generates_with_onnxruntime_genai(hub: HubServer) -> None:
    from runtime.download import download, validate_artifact

    cached = download("tiny-qwen", Store())
    assert validate_artifact(cached.path, "chat", generate_tokens=4)["generated_tokens"] == 4


def test_cached_model_returns_without_touching_the_network(hub: HubServer) -> None:
    from runtime.download import download

    download("tiny-qwen", Store())
    hub.requests.clear()
    assert download("tiny-qwen", Store()).model_id == MODEL_ID
    assert hub.requests == []


# --- interruptions ----------------------------------------------------------------------------------
def test_connection_dropped_mid_file_resumes_with_a_range_request(hub: HubServer) -> None:
    from runtime.download import download

    hub.drop_after[BIG_FILE] = 1_000_000
    cached = download("tiny-qwen", Store())
    assert hub.gets("model.onnx.data") == [None, "bytes=1000000-"]
    assert Store().verify() == [] and cached.model_id == MODEL_ID


def test_killed_download_resumes_where_it_stopped(hub: HubServer, foundry_home: Path) -> None:
    hub.stall_after[BIG_FILE] = 1_500_000
    process = subprocess.Popen(
        [FOUNDRY, "model", "download", "tiny-qwen"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(p.stat().st_size >= 1_500_000 for p in partials(foundry_home)):
            assert process.poll() is None and time.monotonic() < deadline, (
                "download never reached the stall"
            )
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        hub.release()
    assert refs(foundry_home) == []
    result = run_foundry("model", "download", "tiny-qwen")
    assert result.returncode == 0, result.stderr
    assert hub.gets("model.onnx.data")[-1] == "bytes=1500000-"
    assert refs(foundry_home) == ["tiny-qwen-cpu-fp32@1"]
    assert run_foundry("cache", "verify").returncode == 0


def test_corrupted_file_is_rejected_and_nothing_is_registered(
    hub: HubServer, foundry_home: Path
) -> None:
    from runtime.download import download

    hub.corrupt.add(BIG_FILE)
    with pytest.raises(DownloadCorrupt, match="does not match the hub's checksum"):
        download("tiny-qwen", Store())
    assert refs(foundry_home) == []
    assert partials(foundry_home) == [
        p for p in partials(foundry_home) if "model.onnx.data" not in p.name
    ]
    hub.corrupt.clear()
    assert download("tiny-qwen", Store()).model_id == MODEL_ID


# --- bad input and offline ---------------------------------------------------------------------------
def test_repo_missing_on_the_hub_is_a_clear_not_found(hub: HubServer) -> None:
    result = run_foundry("model", "download", "gone-model")
    assert result.returncode == 3
    assert "error: test-org/not-there@main was not found on http://127.0.0.1:" in result.stderr


def test_offline_mode_serves_cached_models_and_names_offline_for_others(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.download import download

    download("tiny-qwen", Store())
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_foundry("model", "download", "tiny-qwen").returncode == 0
    result = run_foundry("model", "download", "gone-model")
    assert result.returncode == 5 and "HF_HUB_OFFLINE" in result.stderr
    assert hub.requests == []


def test_unreachable_hub_says_it_cannot_reach_it(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.download import download

    hub.stop()
    with pytest.raises(Offline, match="cannot reach the Hugging Face hub"):
        download("tiny-qwen", Store())


def test_variant_whose_provider_is_missing_names_what_would_run(hub: HubServer) -> None:
    from runtime.download import download

    with pytest.raises(ProviderUnavailable) as caught:
        download("tiny-qwen-gpu-fp16:1", Store())
    assert "cuda" in caught.value.message and MODEL_ID in (caught.value.hint or "")


def test_unknown_alias_lists_close_matches(hub: HubServer) -> None:
    from runtime.download import download

    with pytest.raises(ModelNotFound) as caught:
        download("tiny-qwn", Store())
    assert "tiny-qwen" in (caught.value.hint or "")


def test_checkpoint_variant_without_the_compiler_extra_says_how_to_install(hub: HubServer) -> None:
    code = (
        "import sys; sys.modules['compiler.build'] = None\n"  # what a base install looks like
        "from runtime.cli import main; main(['model', 'download', 'source-only'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == NotInstalled.exit_code
    assert "hint: pip install 'foundry-build[compiler]'" in result.stderr


# --- the CLI ----------------------------------------------------------------------------------------
def test_cli_download_prints_progress_then_the_model(hub: HubServer, foundry_home: Path) -> None:
    result = run_foundry("model", "download", "tiny-qwen")
    assert result.returncode == 0, result.stderr
    assert "downloading tiny-qwen-cpu-fp32:1: model.onnx.data" in result.stderr
    assert "100%" in result.stderr
    assert result.stdout.startswith(f"{MODEL_ID} is ready")
    listed = json.loads(run_foundry("model", "list", "--cached", "--json").stdout)["models"]
    assert [(m["id"], m["synthetic"]) for m in listed] == [(MODEL_ID, False)]


def test_cli_remove_drops_the_model_from_the_cache(hub: HubServer, foundry_home: Path) -> None:
    assert run_foundry("model", "download", "tiny-qwen").returncode == 0
    result = run_foundry("model", "remove", "tiny-qwen-cpu-fp32")
    assert result.returncode == 0 and f"removed {MODEL_ID}" in result.stdout
    assert refs(foundry_home) == []
    assert run_foundry("model", "remove", "tiny-qwen-cpu-fp32").returncode == 3


# --- a disk that fills up -----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """FOUNDRY_HOME on a 12 MB tmpfs (needs root; skipped elsewhere)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)]).returncode
        != 0
    ):
        pytest.skip("cannot mount tmpfs here")
    home = mount / "home"
    home.mkdir()
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    yield home
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_filling_mid_download_registers_nothing_and_reports_space(
    hub: HubServer, foundry_home: Path, small_disk: Path
) -> None:
    (small_disk / "catalog").mkdir()
    shutil.copy(foundry_home / "catalog" / "test.yaml", small_disk / "catalog" / "test.yaml")
    hub.stall_after[BIG_FILE] = 500_000
    process = subprocess.Popen(
        [FOUNDRY, "model", "download", "tiny-qwen"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(p.stat().st_size >= 500_000 for p in partials(small_disk)):
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stderr.read() if process.stderr else ""
            )
            time.sleep(0.1)
        with (small_disk / "filler").open("wb") as filler:  # someone else fills the disk meanwhile
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
    finally:
        hub.release()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 6, stderr
    assert "not enough disk space" in stderr and "GB free" in stderr
    (small_disk / "filler").unlink()
    assert refs(small_disk) == [] and partials(small_disk) == []


# --- foundry cache import -------------------------------------------------------------------------
def test_cache_import_registers_a_folder_that_generates(
    tiny_artifact: Path, foundry_home: Path
) -> None:
    result = run_foundry("cache", "import", str(tiny_artifact), "--name", "my-tiny", "--json")
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    meta = imported["metadata"]
    assert imported["id"] == "my-tiny"
    assert (meta["task"], meta["family"], meta["provider"], meta["tool_parser"]) == (
        "chat",
        "qwen2",
        "cpu",
        "qwen",
    )
    assert meta["validation"]["generated_tokens"] == 4
    assert meta["source"] == f"folder:{tiny_artifact.resolve()}"
    listed = json.loads(run_foundry("model", "list", "--cached", "--json").stdout)["models"]
    assert [m["id"] for m in listed] == ["my-tiny"]


def test_cache_import_under_an_alias_makes_the_alias_resolve_to_it(
    tiny_artifact: Path, foundry_home: Path
) -> None:
    from runtime.catalog import Catalog

    assert (
        run_foundry("cache", "import", str(tiny_artifact), "--name", "qwen2.5-0.5b").returncode == 0
    )
    variant = Catalog.load().best_variant("qwen2.5-0.5b")
    model = Store().resolve(variant.id)
    assert model.metadata["alias"] == "qwen2.5-0.5b"
    assert f"{variant.id}" in run_foundry("model", "list", "--cached").stdout


def test_cache_import_of_a_folder_without_a_model_is_one_line(
    tmp_path: Path, foundry_home: Path
) -> None:
    (tmp_path / "empty").mkdir()
    result = run_foundry("cache", "import", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: folder ") and "genai_config.json" in result.stderr


def test_cache_import_of_a_damaged_model_registers_nothing(
    tiny_artifact: Path, tmp_path: Path, foundry_home: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_artifact, damaged)
    (damaged / "model.onnx").write_bytes(b"")  # a truncated data file is refused earlier (policy)
    result = run_foundry("cache", "import", str(damaged))
    assert result.returncode == 7, result.stderr
    assert "does not load in onnxruntime-genai" in result.stderr
    assert refs(foundry_home) == []


# --- a checkpoint variant compiles through the compiler ------------------------------------------
@pytest.mark.slow
def test_checkpoint_variant_downloads_the_source_and_compiles_it(
    hub: HubServer, tiny_source, foundry_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("compiler.build")
    hub.add(RemoteRepo.from_folder("test-org/tiny-qwen", tiny_source("qwen2.5-0.5b")))
    monkeypatch.setenv(
        "HF_HOME", str(foundry_home / "hf")
    )  # the subprocess's hub cache, not the user's
    result = run_foundry("model", "download", "source-only", timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("source-only-cpu-int4:1 is ready")
    assert any(path.endswith("/model.safetensors") for _, path, _ in hub.requests)
    model = Store().resolve("source-only-cpu-int4:1")
    assert model.metadata["task"] == "chat" and (model.path / "genai_config.json").is_file()
