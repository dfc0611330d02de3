"""The catalog: aliases -> the best variant for this hardware; `foundry model list/info`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from runtime.catalog import Catalog, catalog_schema, load_catalog_file
from runtime.cli import main
from runtime.errors import CatalogError, InsufficientMemory, ModelNotFound, ProviderUnavailable
from runtime.hardware import Hardware, detect
from runtime.service.apis.foundry.wire import variant_list_item
from runtime.settings import REPO_ROOT

REQUIRED_ALIASES = {
    "phi-3.5-mini",
    "phi-4-mini",
    "mistral-7b-instruct",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-7b",
    "qwen2.5-coder-1.5b",
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "deepseek-r1-distill-qwen-1.5b",
    "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-llama-8b",
    "whisper-tiny",
    "whisper-base",
    "whisper-small",
    "all-minilm-l6-v2",
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
}
CPU_ONLY = Hardware(frozenset({"cpu"}), 16_000_000_000)
EVERYTHING = Hardware(frozenset({"cpu", "cuda", "qnn"}), 64_000_000_000, has_gpu=True, has_npu=True)

USER_CATALOG = """\
schema: 1
models:
  - alias: tiny-chat
    name: tiny-chat
    display_name: Tiny chat
    publisher: Test
    license: MIT
    task: chat
    family: qwen2
    max_output_tokens: 256
    context_length: 512
    variants:
      - {device: cpu, provider: cpu, precision: fp32, size: 1000,
         artifact: {repo: test/tiny, revision: main, subfolder: cpu-fp32}}
      - {device: gpu, provider: cuda, precision: int4, size: 1000,
         artifact: {repo: test/tiny, revision: main, subfolder: cuda-int4}}
      - {device: npu, provider: qnn, precision: int4, size: 1000,
         artifact: {repo: test/tiny, revision: main, subfolder: qnn-int4}}
"""


def write_user_catalog(home: Path, text: str, name: str = "mine.yaml") -> Path:
    (home / "catalog").mkdir(exist_ok=True)
    path = home / "catalog" / name
    path.write_text(text)
    return path


# --- the data ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "catalog").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_catalog_file_loads(path: Path) -> None:
    assert load_catalog_file(path).models


def test_catalog_has_every_alias_the_issue_names_with_its_config_file(foundry_home: Path) -> None:
    catalog = Catalog.load()
    assert {a.alias for a in catalog.aliases()} >= REQUIRED_ALIASES
    for entry in catalog.aliases():
        assert entry.config == f"configs/{entry.alias}.json"
        assert entry.license and entry.publisher and entry.display_name


def test_variant_ids_follow_foundry_local_style(foundry_home: Path) -> None:
    ids = {v.id for v in Catalog.load().variants()}
    assert "qwen2.5-0.5b-instruct-cpu-int4:1" in ids
    assert "phi-3.5-mini-instruct-cpu-int4:1" in ids


def test_schema_file_is_fresh() -> None:
    assert (REPO_ROOT / "catalog" / "catalog.schema.json").read_text() == catalog_schema()


def test_every_list_item_carries_the_fields_foundry_local_sdk_requires(foundry_home: Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Runtime(pydantic.BaseModel):
        deviceType: str
        executionProvider: str

    class Item(
        pydantic.BaseModel
    ):  # the fields of foundry-local-sdk 0.5's FoundryListResponseModel
        name: str
        displayName: str
        modelType: str
        providerType: str
        uri: str
        version: str
        promptTemplate: dict
        publisher: str
        task: str
        runtime: Runtime
        fileSizeMb: int
        modelSettings: dict
        alias: str
        supportsToolCalling: bool
        license: str
        licenseDescription: str
        parentModelUri: str
        maxOutputTokens: int
        minFLVersion: str

    sdk_providers = {
        "CPUExecutionProvider",
        "WebGpuExecutionProvider",
        "CUDAExecutionProvider",
        "QNNExecutionProvider",
    }
    for variant in Catalog.load().variants():
        item = Item.model_validate(msgspec.to_builtins(variant_list_item(variant)))
        assert item.runtime.deviceType in {"CPU", "GPU", "NPU"}
        assert item.runtime.executionProvider in sdk_providers
    phi = Catalog.load().variant("phi-3.5-mini-instruct-cpu-int4:1")
    assert phi is not None and "{Content}" in variant_list_item(phi).prompt_template["prompt"]


def test_smollm2_135m_defaults_to_int8_on_a_cpu(foundry_home: Path) -> None:
    """At 135M the near-lossless int8 is small, so it is what `foundry model run` gets (issue 11)."""
    variant = Catalog.load().best_variant("smollm2-135m", hardware=CPU_ONLY)
    assert variant.id == "smollm2-135m-instruct-cpu-int8:1"
    assert variant.spec.checkpoint is not None
    assert variant.spec.checkpoint.repo == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_catalog_says_what_the_hub_says(foundry_home: Path) -> None:
    """Facts a check against the hub found wrong once (issue 11, section 5)."""
    catalog = Catalog.load()
    qwen_r1 = catalog.best_variant("deepseek-r1-distill-qwen-1.5b", hardware=CPU_ONLY)
    assert qwen_r1.spec.artifact is not None
    assert qwen_r1.spec.artifact.repo == "onnxruntime/DeepSeek-R1-Distill-ONNX"
    for alias in ("whisper-tiny", "whisper-base", "whisper-small"):
        entry = catalog.variants(alias)[0].entry
        assert entry.license == "apache-2.0"  # the weights; OpenAI's code is MIT
        config = json.loads((REPO_ROOT / "catalog" / str(entry.config)).read_text())
        assert len(config["suppress_tokens"]) == 88
    mistral = catalog.variants("mistral-7b-instruct")[0].entry
    assert mistral.gated and mistral.prompt_template["prompt"] == "[INST] {Content}[/INST]"
    phi4 = catalog.variants("phi-4-mini")[0].entry
    assert phi4.prompt_template["prompt"] == "<|user|>{Content}<|end|><|assistant|>"
    llama = (REPO_ROOT / "catalog" / "templates" / "llama3.jinja").read_text()
    assert "strftime_now" in llama and "builtin_tools" not in llama  # 3.2's, not 3.1's


def test_hub_checkpoint_download_skips_mistrals_consolidated_safetensors(
    tmp_path: Path, tiny_source
) -> None:
    from tests.hub_server import HubServer, RemoteRepo

    files = RemoteRepo.from_folder("mistralai/tiny", tiny_source("mistral-7b-instruct")).files
    files["consolidated.safetensors"] = b"mistral-inference's copy of the same weights"
    with HubServer() as hub:
        hub.add(RemoteRepo("mistralai/tiny", files))
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("foundry-build")),
                "plan",
                "mistralai/tiny",
                "--target",
                "cpu-int4",
                "--json",
            ],
            env={
                **os.environ,
                "FOUNDRY_HOME": str(tmp_path / "home"),
                "HF_ENDPOINT": hub.endpoint,
                "HF_HOME": str(tmp_path / "hf"),
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
        fetched = {path for _, path, _ in hub.requests}
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plans"][0]["recipe"] == "mistral.yaml"
    assert any(path.endswith(".safetensors") for path in fetched)
    assert not any("consolidated" in path for path in fetched)


# --- user files ------------------------------------------------------------------------------
def test_user_catalog_adds_an_alias(foundry_home: Path) -> None:
    write_user_catalog(foundry_home, USER_CATALOG)
    catalog = Catalog.load()
    assert [v.id for v in catalog.variants("tiny-chat")] == [
        "tiny-chat-cpu-fp32:1",
        "tiny-chat-gpu-int4:1",
        "tiny-chat-npu-int4:1",
    ]
    assert "qwen2.5-0.5b" in {a.alias for a in catalog.aliases()}


def test_user_catalog_overrides_a_builtin_alias(foundry_home: Path) -> None:
    write_user_catalog(
        foundry_home, USER_CATALOG.replace("alias: tiny-chat", "alias: qwen2.5-0.5b")
    )
    assert Catalog.load().alias("qwen2.5-0.5b").publisher == "Test"


def test_broken_user_catalog_names_file_line_and_field(foundry_home: Path) -> None:
    path = write_user_catalog(foundry_home, USER_CATALOG.replace("device: gpu", "device: tpu"))
    with pytest.raises(CatalogError) as caught:
        Catalog.load()
    assert f"{path}:15:" in caught.value.message  # the line of the second variant
    assert "$.models[0].variants[1].device" in caught.value.message


def test_typo_in_a_field_name_is_an_error_naming_its_line(foundry_home: Path) -> None:
    path = write_user_catalog(
        foundry_home, USER_CATALOG.replace("    publisher: Test", "    publsher: Test")
    )
    with pytest.raises(CatalogError) as caught:
        Catalog.load()
    assert f"{path}:6:" in caught.value.message and "publsher" in caught.value.message


def test_variant_without_a_source_is_an_error(foundry_home: Path) -> None:
    text = USER_CATALOG.replace(
        ",\n         artifact: {repo: test/tiny, revision: main, subfolder: cpu-fp32}", ""
    )
    write_user_catalog(foundry_home, text)
    with pytest.raises(CatalogError, match="exactly one source"):
        Catalog.load()


def test_broken_user_catalog_is_one_line_from_the_cli(foundry_home: Path) -> None:
    write_user_catalog(foundry_home, "schema: 1\nmodels: [\n")
    result = CliRunner().invoke(main, ["model", "list"])
    assert result.exit_code == 2
    assert "mine.yaml" in result.output and "not valid YAML" in result.output


# --- choosing a variant ------------------------------------------------------------------------
def test_alias_resolves_npu_then_gpu_then_cpu(foundry_home: Path) -> None:
    write_user_catalog(foundry_home, USER_CATALOG)
    catalog = Catalog.load()
    assert catalog.best_variant("tiny-chat", hardware=EVERYTHING).id == "tiny-chat-npu-int4:1"
    gpu_only = Hardware(frozenset({"cpu", "cuda"}), 64_000_000_000, has_gpu=True)
    assert catalog.best_variant("tiny-chat", hardware=gpu_only).id == "tiny-chat-gpu-int4:1"
    assert catalog.best_variant("tiny-chat", hardware=CPU_ONLY).id == "tiny-chat-cpu-fp32:1"


def test_device_option_overrides_the_preference(foundry_home: Path) -> None:
    write_user_catalog(foundry_home, USER_CATALOG)
    assert Catalog.load().best_variant("tiny-chat", "cpu", EVERYTHING).id == "tiny-chat-cpu-fp32:1"


def test_missing_provider_names_the_provider_and_what_would_run(foundry_home: Path) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        Catalog.load().best_variant("phi-3.5-mini", "gpu", CPU_ONLY)
    assert "cuda" in caught.value.message
    assert "phi-3.5-mini-instruct-cpu-int4:1" in (caught.value.hint or "")


def test_a_variant_too_large_for_memory_is_skipped(foundry_home: Path) -> None:
    small = Hardware(frozenset({"cpu"}), 3_000_000_000)
    assert (
        Catalog.load().best_variant("qwen2.5-0.5b", hardware=small).id
        == "qwen2.5-0.5b-instruct-cpu-int4:1"
    )
    with pytest.raises(InsufficientMemory, match="GB"):
        Catalog.load().best_variant("qwen2.5-7b", hardware=small)


def test_unknown_alias_lists_close_matches(foundry_home: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        Catalog.load().find("qwen2.5-05b")
    assert "qwen2.5-0.5b" in (caught.value.hint or "")


def test_variant_id_without_version_finds_the_newest_version(foundry_home: Path) -> None:
    _, variant = Catalog.load().find("qwen2.5-0.5b-instruct-cpu-int4")
    assert variant.id == "qwen2.5-0.5b-instruct-cpu-int4:1"


def test_hardware_detection_reports_cpu_and_memory() -> None:
    hardware = detect()
    assert hardware.has_provider("cpu") and "CPUExecutionProvider" in hardware.ort_providers
    assert hardware.memory_bytes > 0


# --- the CLI -----------------------------------------------------------------------------------
def test_model_list_shows_providers_and_filters_by_task(foundry_home: Path) -> None:
    result = CliRunner().invoke(main, ["model", "list", "--task", "speech"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("providers: cpu")
    assert "openai-whisper-tiny-cpu-fp32:1" in result.output
    assert "qwen2.5-0.5b" not in result.output


def test_model_list_json_marks_cached_synthetic_builds(foundry_home: Path, tmp_path: Path) -> None:
    from runtime.store import Store
    from runtime.store.metadata import ModelMetadata

    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "genai_config.json").write_text("{}")
    Store().register(
        folder,
        model_id="qwen2.5-0.5b-instruct-cpu-int4:1",
        metadata=ModelMetadata(task="chat", synthetic=True),
    )
    result = CliRunner().invoke(main, ["model", "list", "--cached", "--json"])
    rows = json.loads(result.output)["models"]
    assert [(r["id"], r["cached"], r["synthetic"]) for r in rows] == [
        ("qwen2.5-0.5b-instruct-cpu-int4:1", True, True)
    ]
    table = CliRunner().invoke(main, ["model", "list", "--cached"]).output
    assert "synthetic" in table


def test_model_info_says_which_variant_runs_here(foundry_home: Path) -> None:
    result = CliRunner().invoke(main, ["model", "info", "phi-3.5-mini", "--json"])
    data = json.loads(result.output)
    assert data["best_variant"] == "phi-3.5-mini-instruct-cpu-int4:1"
    assert {v["id"] for v in data["variants"]} >= {"phi-3.5-mini-instruct-gpu-int4:1"}


def test_model_info_for_unknown_alias_exits_3_with_suggestions(foundry_home: Path) -> None:
    result = CliRunner().invoke(main, ["model", "info", "phi-3.5-min"])
    assert result.exit_code == 3
    assert "hint: did you mean: phi-3.5-mini" in result.output


def test_model_help_imports_no_heavy_module() -> None:
    code = (
        "import sys; from runtime.cli import main\n"
        "try: main(['model', 'list', '--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'onnxruntime','onnxruntime_genai','huggingface_hub','rich','numpy','torch'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
