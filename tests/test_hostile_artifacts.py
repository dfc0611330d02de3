"""Hostile model folders: refused before onnxruntime(-genai) sees them, on import, download and load.

The corpus is built here from one real tiny artifact (nothing binary is committed): each row
is a copy of it with one hostile change, as a review of Ollama's and vLLM's CVEs suggested
(native code through `custom_ops_library`, paths out of the folder, external data past the
end of its file, a 2 GB tokenizer claim, JSON nested to blow the stack).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from runtime.artifact_policy import check_artifact
from runtime.errors import UnsafeArtifact
from runtime.store import Store
from runtime.store.metadata import ModelMetadata

FOUNDRY = str(Path(sys.executable).with_name("foundry"))
EVIL_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void loaded(void) {
    const char *marker = getenv("EVIL_MARKER");
    if (marker) { FILE *f = fopen(marker, "w"); if (f) { fputs("native code ran\n", f); fclose(f); } }
}
"""


@pytest.fixture(scope="session")
def artifact(genai_artifact) -> Path:
    return genai_artifact("qwen2.5-0.5b")


@pytest.fixture(scope="session")
def evil_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library whose constructor writes $EVIL_MARKER: proof that something dlopen'd it."""
    folder = tmp_path_factory.mktemp("evil")
    (folder / "evil.c").write_text(EVIL_C)
    library = folder / "evil.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(folder / "evil.c")], check=True
    )
    return library


# --- the corpus: (id, change to a copy of the artifact, what the refusal names) -------------------
def _genai(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "genai_config.json"
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))

    return apply


def _session_options(**options: object) -> Callable[[Path], None]:
    return _genai(lambda c: c["model"]["decoder"]["session_options"].update(options))


def _decoder_file(name: str) -> Callable[[Path], None]:
    return _genai(lambda c: c["model"]["decoder"].update(filename=name))


def _external_data(**entries: str) -> Callable[[Path], None]:
    """Rewrite the first external tensor's external_data entries (onnx, from the dev extra)."""

    def apply(folder: Path) -> None:
        import onnx

        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        tensor = next(t for t in model.graph.initializer if t.data_location == 1)
        for entry in tensor.external_data:
            if entry.key in entries:
                entry.value = entries[entry.key]
        onnx.save(model, str(folder / "model.onnx"))

    return apply


def _symlink(name: str, target: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(target)

    return apply


def _sparse_tokenizer(folder: Path) -> None:
    with (folder / "tokenizer.json").open("r+b") as handle:
        handle.truncate(2 << 30)  # a 2 GiB claim that costs no disk (sparse)


def _deep_genai(folder: Path) -> None:
    (folder / "genai_config.json").write_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _inference_model(folder: Path) -> None:
    data = {"Name": "x", "PromptTemplate": {"prompt": "{Content}"}, "PostLoadHook": "/bin/sh"}
    (folder / "inference_model.json").write_text(json.dumps(data))


CORPUS: list[tuple[str, Callable[[Path], None], str]] = [
    ("custom-ops-library", _session_options(custom_ops_library="evil.so"), "custom_ops_library"),
    ("enable-profiling", _session_options(enable_profiling="prof"), "enable_profiling"),
    (
        "unknown-config-entry",
        _session_options(config_entries={"ep.context_file_path": "/tmp/x.onnx"}),
        "ep.context_file_path",
    ),
    (
        "provider-option-library",
        _session_options(provider_options=[{"cuda": {"shared_library": "/tmp/x.so"}}]),
        "names a file or library",
    ),
    ("absolute-filename", _decoder_file("/etc/passwd"), "relative name inside"),
    ("dotdot-filename", _decoder_file("../model.onnx"), "relative name inside"),
    ("symlink-filename", _symlink("model.onnx", "/etc/hostname"), "outside the model folder"),
    ("symlink-tokenizer", _symlink("tokenizer.json", "/etc/hostname"), "outside the model folder"),
    ("symlink-environ", _symlink("notes.txt", "/proc/self/environ"), "outside the model folder"),
    ("external-data-absolute", _external_data(location="/etc/passwd"), "relative name inside"),
    ("external-data-dotdot", _external_data(location="../model.onnx.data"), "relative name inside"),
    ("external-data-past-end", _external_data(offset="99999999"), "past the end"),
    ("external-data-length", _external_data(length="99999999"), "past the end"),
    ("tokenizer-2gb", _sparse_tokenizer, "2,147,483,648 bytes"),
    ("deep-json", _deep_genai, "not valid JSON"),
    ("inference-model-extra-key", _inference_model, "PostLoadHook"),
]
CORPUS_IDS = [row[0] for row in CORPUS]


@pytest.fixture
def hostile(artifact: Path, tmp_path: Path, evil_library: Path) -> Callable[[str], Path]:
    """`hostile(row_id) -> folder`: a copy of the tiny artifact with that row's change."""
    changes = {row_id: change for row_id, change, _ in CORPUS}

    def make(row_id: str) -> Path:
        folder = tmp_path / row_id
        shutil.copytree(artifact, folder)
        shutil.copy(evil_library, folder / "evil.so")
        changes[row_id](folder)
        return folder

    return make


def refs(home: Path) -> list[str]:
    folder = home / "cache" / "refs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- the policy itself ------------------------------------------------------------------------------
def test_the_real_artifact_passes_the_policy(artifact: Path) -> None:
    check_artifact(artifact)


@pytest.mark.parametrize(("row_id", "change", "named"), CORPUS, ids=CORPUS_IDS)
def test_each_hostile_folder_is_refused_by_the_policy(hostile, row_id, change, named) -> None:
    with pytest.raises(UnsafeArtifact) as refused:
        check_artifact(hostile(row_id))
    assert named in refused.value.message


# --- foundry cache import ---------------------------------------------------------------------------
@pytest.mark.parametrize(("row_id", "change", "named"), CORPUS, ids=CORPUS_IDS)
def test_cache_import_refuses_each_hostile_folder_in_one_line_and_runs_no_native_code(
    hostile, foundry_home: Path, tmp_path: Path, row_id, change, named
) -> None:
    marker = tmp_path / "marker"
    result = subprocess.run(
        [FOUNDRY, "cache", "import", str(hostile(row_id)), "--name", "hostile"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EVIL_MARKER": str(marker)},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and named in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert refs(foundry_home) == []


def test_without_the_policy_onnxruntime_genai_would_dlopen_the_folders_library(
    hostile, tmp_path: Path
) -> None:
    """Why the check exists: onnxruntime-genai 0.18 loads `custom_ops_library` from the folder."""
    marker = tmp_path / "marker"
    folder = hostile("custom-ops-library")
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import onnxruntime_genai as og\ntry: og.Model({str(folder)!r})\n"
            "except Exception: pass",
        ],
        env={**os.environ, "EVIL_MARKER": str(marker)},
        check=True,
        timeout=120,
    )
    assert marker.read_text() == "native code ran\n"


# --- download validation ----------------------------------------------------------------------------
def test_a_hub_artifact_with_a_custom_ops_library_is_refused_and_nothing_registered(
    hostile, foundry_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.hub_server import HubServer, RemoteRepo
    from tests.test_download import CATALOG, REPO, SUBFOLDER

    (foundry_home / "catalog").mkdir()
    (foundry_home / "catalog" / "test.yaml").write_text(CATALOG)
    marker = tmp_path / "marker"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as server:
        server.add(RemoteRepo.from_folder(REPO, hostile("custom-ops-library"), prefix=SUBFOLDER))
        result = subprocess.run(
            [FOUNDRY, "model", "download", "tiny-qwen"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_ENDPOINT": server.endpoint, "EVIL_MARKER": str(marker)},
        )
    assert result.returncode == 2, result.stderr
    assert "custom_ops_library" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert refs(foundry_home) == []


# --- every store load -------------------------------------------------------------------------------
def test_a_hostile_folder_already_in_the_store_is_refused_at_load_with_a_400(
    hostile, service, tmp_path: Path
) -> None:
    """Blobs can change on disk after import; the service checks again before the engine loads."""
    store = Store(Path(service.home) / "cache", sweep=False)
    store.register(
        hostile("custom-ops-library"),
        model_id="hostile-in-store",
        metadata=ModelMetadata(task="chat", family="qwen2", context_length=512),
    )
    reply = httpx.post(
        f"{service.base_url}/v1/chat/completions",
        json={"model": "hostile-in-store", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "unsafe_artifact" and "custom_ops_library" in error["message"]
    assert httpx.get(f"{service.base_url}/health", timeout=10).status_code == 200


# --- links in foundry cache import ------------------------------------------------------------------
def test_cache_import_refuses_a_hard_link_to_a_file_outside_and_stores_none_of_it(
    artifact: Path, foundry_home: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- not really\n")
    folder = tmp_path / "linked"
    shutil.copytree(artifact, folder)
    os.link(secret, folder / "notes.txt")
    result = subprocess.run(
        [FOUNDRY, "cache", "import", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: notes.txt is a hard link to a file outside")
    assert refs(foundry_home) == []
    cached = [p for p in (foundry_home / "cache").rglob("*") if p.is_file()]
    assert all(secret.read_bytes() not in p.read_bytes() for p in cached)


def test_hard_links_that_stay_inside_the_folder_are_fine(artifact: Path, tmp_path: Path) -> None:
    from runtime.artifact_policy import check_hard_links

    folder = tmp_path / "inside"
    shutil.copytree(artifact, folder)
    os.link(folder / "tokenizer.json", folder / "tokenizer-copy.json")
    check_hard_links(folder)


# --- a hostile hub ----------------------------------------------------------------------------------
HOSTILE_HUB = [
    ("dotdot-name", "../../../../escaped.txt", None, "lists"),
    ("absolute-name", "/etc/cron.d/escaped", None, "lists"),
    ("non-hex-digest", "model.onnx.data", "../../../escaped", "malformed sha256"),
    ("tokenizer-2gb-claim", "tokenizer.json", 2 << 30, "2,147,483,648 bytes"),
]


@pytest.mark.parametrize(
    ("row_id", "name", "twist", "named"), HOSTILE_HUB, ids=[r[0] for r in HOSTILE_HUB]
)
def test_a_hostile_hub_listing_is_refused_before_anything_is_written(
    artifact: Path, foundry_home: Path, monkeypatch: pytest.MonkeyPatch, row_id, name, twist, named
) -> None:
    from tests.hub_server import HubServer, RemoteRepo
    from tests.test_download import CATALOG, REPO, SUBFOLDER

    class HostileRepo(RemoteRepo):
        def sibling(self, path: str) -> dict[str, object]:
            entry = super().sibling(path)
            if path == f"{SUBFOLDER}/{name}" and isinstance(twist, str):
                entry["lfs"] = {**entry["lfs"], "sha256": twist}  # type: ignore[dict-item]
            if path == f"{SUBFOLDER}/{name}" and isinstance(twist, int):
                entry["size"] = twist
                entry.pop("lfs", None)
            return entry

    files = RemoteRepo.from_folder(REPO, artifact, prefix=SUBFOLDER).files
    files.setdefault(f"{SUBFOLDER}/{name}", b"escaped\n")
    (foundry_home / "catalog").mkdir()
    (foundry_home / "catalog" / "test.yaml").write_text(CATALOG)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as server:
        server.add(HostileRepo(REPO, files))
        result = subprocess.run(
            [FOUNDRY, "model", "download", "tiny-qwen"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_ENDPOINT": server.endpoint},
        )
        fetched = [path for _method, path, _range in server.requests if "/resolve/" in path]
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and named in result.stderr
    assert fetched == []  # refused from the listing: no file was downloaded at all
    assert refs(foundry_home) == []
    outside = [p for p in foundry_home.parent.rglob("escaped*")]
    assert outside == [] and not Path("/etc/cron.d/escaped").exists()
