"""foundry-build: tiny synthetic checkpoints of five decoder families become validated artifacts.

Each family is built once per session (fp32 + int4) into a session store; the Olive path runs
on Qwen2 and Phi-3, the bare genai-builder path on Qwen3, Llama and Mistral. CLI stories run
the installed `foundry-build` in a subprocess with a private FOUNDRY_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from compiler.build import BuildRequest, BuildResult, build
from runtime.store import Store

BIN = Path(sys.executable).parent
FOUNDRY_BUILD = str(BIN / "foundry-build")
FOUNDRY = str(BIN / "foundry")

# alias -> (family, backend used here)
FAMILIES = {
    "qwen2.5-0.5b": ("qwen2", "olive"),
    "phi-3.5-mini": ("phi3", "olive"),
    "qwen3-0.6b": ("qwen3", "genai-builder"),
    "llama-3.2-1b": ("llama", "genai-builder"),
    "mistral-7b-instruct": ("mistral", "genai-builder"),
}
OLIVE_PASSES = ["FoundryModelBuilder", "OnnxPeepholeOptimizer", "AddOliveMetadata"]
ARTIFACT_FILES = {
    "genai_config.json",
    "model.onnx",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "inference_model.json",
    "build.json",
}


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def build_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for the in-process builds of this session."""
    return Store(tmp_path_factory.mktemp("build-home") / "cache")


@pytest.fixture(scope="session")
def built(build_store: Store, tiny_source):
    """`built(alias) -> {target: BuildResult}`: fp32 + int4 of a tiny checkpoint, built once."""
    results: dict[str, dict[str, BuildResult]] = {}

    def get(alias: str) -> dict[str, BuildResult]:
        if alias not in results:
            _, backend = FAMILIES[alias]
            request = BuildRequest(
                model=str(tiny_source(alias)),
                targets=["cpu-fp32", "cpu-int4"],
                backend=None if backend == "olive" else backend,
            )
            results[alias] = {r.target: r for r in build(request, build_store)}
        return results[alias]

    return get


def run_build(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "FOUNDRY_HOME": str(home), **env}
    environ.pop("FOUNDRY_DEBUG", None)
    return subprocess.run(
        [FOUNDRY_BUILD, *args], capture_output=True, text=True, env=environ, timeout=600
    )


def store_listing(home: Path) -> list[str]:
    """Every file under the cache except lock files (which only save duplicate work)."""
    root = home / "cache"
    if not root.exists():
        return []
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "locks" not in p.parts
    )


# --- parity and agreement -----------------------------------------------------------------------
@pytest.mark.parametrize("alias", sorted(FAMILIES))
def test_fp32_artifact_reproduces_transformers_greedy_tokens(alias: str, built) -> None:
    result = built(alias)["cpu-fp32"]
    validation = result.validation
    assert validation["exact"] is True and validation["required"] == "exact"
    assert validation["matched_tokens"] == validation["steps"] == 32
    assert validation["max_abs_logit_diff"] < 1e-3
    assert {p.name for p in result.model.path.iterdir()} >= ARTIFACT_FILES
    meta = result.model.metadata
    assert (meta["task"], meta["family"], meta["target"]) == (
        "chat",
        FAMILIES[alias][0],
        "cpu-fp32",
    )
    assert (meta["device"], meta["precision"], meta["provider"], meta["runnable"]) == (
        "cpu",
        "fp32",
        "cpu",
        True,
    )
    assert meta["source"].startswith("folder:") and meta["synthetic"] is False
    assert meta["context_length"] > 0 and meta["tool_parser"]


@pytest.mark.parametrize("alias", sorted(FAMILIES))
def test_int4_build_reports_its_quality_on_the_corpus_without_a_floor_on_random_weights(
    alias: str, built
) -> None:
    validation = built(alias)["cpu-int4"].validation
    quality = validation["quality"]
    assert validation["required"] == "report"  # random weights: the figures say nothing
    assert validation["floor"] is not None and validation["generated_tokens"] > 0
    assert 0 <= quality["top1"] <= 1 and quality["kld"] >= 0 and quality["ppl_ratio"] > 0
    assert quality["tokens"] > 1000 and quality["corpus"].startswith("corpus@sha256:")


@pytest.mark.parametrize("alias", ["qwen2.5-0.5b", "phi-3.5-mini"])
def test_olive_build_runs_our_builder_pass_then_the_recipe_passes(alias: str, built) -> None:
    result = built(alias)["cpu-int4"]
    record = json.loads((result.model.path / "build.json").read_text())
    assert record["backend"]["backend"] == "olive"
    assert record["backend"]["olive_passes"] == OLIVE_PASSES
    graph = onnx.load(str(result.model.path / "model.onnx"), load_external_data=False)
    assert graph.graph.name == "foundry-build"  # written by Olive's AddOliveMetadata pass
    assert "olive_version" in {p.key for p in graph.metadata_props}


def test_genai_builder_backend_builds_without_olive(built) -> None:
    record = json.loads((built("qwen3-0.6b")["cpu-int4"].model.path / "build.json").read_text())
    assert record["backend"]["backend"] == "genai-builder"
    assert record["backend"]["builder_options"] == {
        "accuracy_level": "4",
        "block_size": "32",
        "prune_lm_head": "true",
        "shared_embeddings": "false",
        "op_types_to_quantize": "MatMul/Gather",
        "matmul_mixed_precision": "last_matmul:int8,mixed_layers:int8",
    }


def test_build_json_records_provenance(built) -> None:
    result = built("qwen2.5-0.5b")["cpu-fp32"]
    record = json.loads((result.model.path / "build.json").read_text())
    assert record["source"].startswith("folder:") and record["source_digest"].startswith("sha256:")
    assert record["recipe"] == "qwen2" and record["recipe_digest"].startswith("sha256:")
    assert record["build_key"] == result.build_key
    assert (
        record["tools"]["onnxruntime-genai"] == "0.18.0" and record["tools"]["olive-ai"] == "0.13.0"
    )
    assert record["validation"] == result.validation
    assert record["seconds"] > 0 and record["peak_rss_bytes"] > 0


def test_artifact_carries_the_chat_template_and_foundry_prompt_template(built) -> None:
    path = built("qwen2.5-0.5b")["cpu-int4"].model.path
    assert (
        "<|im_start|>" in json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
    )
    inference = json.loads((path / "inference_model.json").read_text())
    assert inference["Name"] == "qwen2.5-0.5b-cpu-int4"
    assert inference["PromptTemplate"] == {
        "system": "<|im_start|>system\n{Content}<|im_end|>\n",
        "user": "<|im_start|>user\n{Content}<|im_end|>\n",
        "assistant": "<|im_start|>assistant\n{Content}<|im_end|>\n",
        "prompt": "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant\n",
    }


# --- the store: cache hits and dedup --------------------------------------------------------
def test_rebuild_with_same_inputs_is_a_cache_hit(built, build_store: Store, tiny_source) -> None:
    first = built("llama-3.2-1b")["cpu-int4"]
    builds_before = sorted(p.name for p in build_store.layout.builds.iterdir())
    manifests_before = sorted(p.name for p in build_store.layout.manifests.iterdir())
    request = BuildRequest(
        model=str(tiny_source("llama-3.2-1b")), targets=["cpu-int4"], backend="genai-builder"
    )
    (again,) = build(request, build_store)
    assert again.cache_hit is True and first.cache_hit is False
    assert again.model.manifest_digest == first.model.manifest_digest
    assert again.model.manifest == first.model.manifest and again.build_key == first.build_key
    assert sorted(p.name for p in build_store.layout.builds.iterdir()) == builds_before
    assert sorted(p.name for p in build_store.layout.manifests.iterdir()) == manifests_before


def test_identical_files_of_two_variants_are_stored_once(built, build_store: Store) -> None:
    fp32, int4 = (
        built("mistral-7b-instruct")["cpu-fp32"].model,
        built("mistral-7b-instruct")["cpu-int4"].model,
    )
    shared = fp32.manifest.files["tokenizer.json"].digest
    assert int4.manifest.files["tokenizer.json"].digest == shared
    assert fp32.manifest.files["model.onnx"].digest != int4.manifest.files["model.onnx"].digest
    blobs = {p.name for p in build_store.layout.blobs.glob("*/*")}
    referenced = {
        e.digest.split(":")[1] for m in build_store.list_models() for e in m.manifest.files.values()
    }
    assert referenced <= blobs
    assert len(list(build_store.layout.blobs.glob(f"*/{shared.split(':')[1]}"))) == 1
    inode = (fp32.path / "tokenizer.json").stat().st_ino
    assert (int4.path / "tokenizer.json").stat().st_ino == inode  # snapshots hard-link one blob


def test_build_only_targets_produce_files_marked_not_runnable(
    build_store: Store, tiny_source
) -> None:
    request = BuildRequest(
        model=str(tiny_source("qwen2.5-0.5b")),
        targets=["cuda-int4", "cuda-fp16", "dml-int4", "webgpu-int4"],
    )
    for result in build(request, build_store):
        assert {"model.onnx", "genai_config.json", "build.json"} <= {
            p.name for p in result.model.path.iterdir()
        }
        assert result.model.metadata["runnable"] is False
        assert "not available on this machine" in result.validation["skipped"]
        provider = result.target.split("-")[0]
        genai = json.loads((result.model.path / "genai_config.json").read_text())
        assert provider in json.dumps(
            genai["model"]["decoder"]["session_options"]["provider_options"]
        )


# --- the CLI --------------------------------------------------------------------------------
def test_cli_json_prints_exactly_the_models_shape_and_then_says_cache_hit(
    tmp_path: Path, tiny_source
) -> None:
    home = tmp_path / "home"
    source = str(tiny_source("qwen3-0.6b"))
    first = run_build(
        home,
        source,
        "--target",
        "cpu-fp32",
        "--backend",
        "genai-builder",
        "--as",
        "tiny-qwen3",
        "--json",
    )
    assert first.returncode == 0, first.stderr
    (model,) = json.loads(first.stdout)["models"]
    assert set(model) == {"id", "path", "target", "cache_hit", "validation", "build_key", "seconds"}
    assert (model["id"], model["target"], model["cache_hit"]) == ("tiny-qwen3", "cpu-fp32", False)
    assert model["validation"]["exact"] is True and Path(model["path"], "model.onnx").is_file()
    second = run_build(
        home, source, "--target", "cpu-fp32", "--backend", "genai-builder", "--as", "tiny-qwen3"
    )
    assert second.returncode == 0, second.stderr
    assert "cache hit" in second.stdout and model["path"] in second.stdout


def test_plan_shows_the_build_key_and_cache_state_without_building(
    tmp_path: Path, tiny_source
) -> None:
    home = tmp_path / "home"
    done = run_build(
        home, "plan", str(tiny_source("qwen2.5-0.5b")), "--target", "cpu-int4", "--json"
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["plans"]
    assert (
        row["passes"] == OLIVE_PASSES
        and row["cache_hit"] is False
        and row["build_key"].startswith("sha256:")
    )
    assert not [p for p in (home / "cache" / "refs").iterdir()]


def test_two_concurrent_builds_of_one_key_build_once(tmp_path: Path, tiny_source) -> None:
    home = tmp_path / "home"
    args = [
        str(tiny_source("llama-3.2-1b")),
        "--target",
        "cpu-int4",
        "--backend",
        "genai-builder",
        "--json",
    ]
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [FOUNDRY_BUILD, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    models = [json.loads(out)["models"][0] for out, _ in outputs]
    assert sorted(m["cache_hit"] for m in models) == [False, True]
    assert models[0]["path"] == models[1]["path"]
    assert len(list((home / "cache" / "builds").iterdir())) == 1


def _no_config(tmp: Path, tiny: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return [str(tmp / "empty")]


def _unknown_arch(tmp: Path, tiny: Path) -> list[str]:
    folder = tmp / "gpt2"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"], config["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (folder / "config.json").write_text(json.dumps(config))
    return [str(folder)]


def _corrupt(tmp: Path, tiny: Path) -> list[str]:
    folder = tmp / "corrupt"
    shutil.copytree(tiny, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return [str(folder)]


BAD_INPUTS = [
    ("missing-folder", lambda tmp, tiny: [str(tmp / "does-not-exist")], 2, "does not exist"),
    ("no-config-json", _no_config, 2, "has no config.json"),
    (
        "unknown-architecture",
        _unknown_arch,
        3,
        "no recipe for architecture 'GPT2LMHeadModel' (a text-generation model per Optimum); "
        "supported: ",
    ),
    (
        "unknown-target",
        lambda tmp, tiny: [str(tiny), "--target", "tpu-int3"],
        2,
        "has no target 'tpu-int3'",
    ),
    ("corrupt-safetensors", _corrupt, 2, "is not a readable safetensors file"),
    (
        "offline-hub",
        lambda tmp, tiny: ["Qwen/Qwen2.5-0.5B-Instruct"],
        5,
        "cannot reach the Hugging Face hub",
    ),
]


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [row[1:] for row in BAD_INPUTS],
    ids=[row[0] for row in BAD_INPUTS],
)
def test_bad_input_is_one_line_nonzero_exit_and_leaves_the_store_as_before(
    args, exit_code: int, message: str, tmp_path: Path, tiny_source
) -> None:
    home = tmp_path / "home"
    Store(home / "cache")
    before = store_listing(home)
    argv = args(tmp_path, tiny_source("qwen2.5-0.5b"))
    done = run_build(home, *argv, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    assert done.returncode == exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0]
    assert all(line.startswith("hint: ") for line in lines[1:]) and len(lines) <= 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert store_listing(home) == before


def wait_until_converting(proc: subprocess.Popen, tmp: Path, timeout: float = 300) -> None:
    """Wait until a running build has a staging folder with an artifact in the making."""
    deadline = time.monotonic() + timeout
    while not (tmp.exists() and list(tmp.glob("build-*/artifact"))):
        assert proc.poll() is None, "the build ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_killed_build_registers_nothing_and_tmp_is_swept_on_next_start(
    tmp_path: Path, tiny_source
) -> None:
    home = tmp_path / "home"
    tmp = home / "cache" / "tmp"
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    proc = subprocess.Popen(
        [FOUNDRY_BUILD, str(tiny_source("phi-3.5-mini")), "--target", "cpu-fp32"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_until_converting(proc, tmp)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [
        p.name for p in tmp.iterdir() if p.name.startswith("build-")
    ]  # the dead build's leftovers
    assert not list((home / "cache" / "refs").iterdir()) and not list(
        (home / "cache" / "builds").iterdir()
    )
    listed = subprocess.run(
        [FOUNDRY, "cache", "list", "--json"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(listed.stdout)["models"] == []
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("build-")]


def test_ctrl_c_during_a_build_exits_130_and_leaves_the_store_as_before(
    tmp_path: Path, tiny_source
) -> None:
    home = tmp_path / "home"
    tmp = home / "cache" / "tmp"
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    proc = subprocess.Popen(
        [FOUNDRY_BUILD, str(tiny_source("qwen3-0.6b")), "--target", "cpu-fp32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wait_until_converting(proc, tmp)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "aborted"
    assert "Traceback" not in err
    assert not list((home / "cache" / "refs").iterdir())
    assert not [p for p in tmp.iterdir()]  # staging removed on the way out


def test_hub_id_downloads_only_what_the_recipe_needs_then_builds(
    tmp_path: Path, tiny_source
) -> None:
    from tests.hub_server import HubServer, RemoteRepo

    files = RemoteRepo.from_folder("tiny/qwen", tiny_source("qwen2.5-0.5b")).files
    files["original/consolidated.pth"] = b"not needed"
    with HubServer() as hub:
        repo = hub.add(RemoteRepo("tiny/qwen", files))
        done = run_build(
            tmp_path / "home",
            "tiny/qwen",
            "--target",
            "cpu-int4",
            "--backend",
            "genai-builder",
            "--json",
            HF_ENDPOINT=hub.endpoint,
            HF_HOME=str(tmp_path / "hf"),
        )
        fetched = {path for _, path, _ in hub.requests}
    assert done.returncode == 0, done.stderr
    (model,) = json.loads(done.stdout)["models"]
    assert model["id"] == "qwen-cpu-int4"
    record = json.loads((Path(model["path"]) / "build.json").read_text())
    assert record["source"] == f"hf:tiny/qwen@{repo.sha}" and record["revision"] == repo.sha
    assert not any("consolidated.pth" in path for path in fetched)


@pytest.mark.slow
def test_demo_builds_the_synthetic_default_model_and_says_its_weights_are_random(
    tmp_path: Path,
) -> None:
    done = run_build(tmp_path / "home", "demo", "--synthetic")
    assert done.returncode == 0, done.stderr
    assert "RANDOM" in done.stdout and "demo-qwen2.5-0.5b-cpu-int4" in done.stdout
    assert (
        "OpenAI API at http://127.0.0.1:" in done.stdout
        and "Answer (random weights):" in done.stdout
    )
