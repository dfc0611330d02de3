"""kill -9 matrix: a real `foundry` subprocess SIGKILLs itself at a named point (runtime/kill_points.py)
of import, download, registry pull and gc; afterwards the store is whole and the same command succeeds.

"Whole" (`assert_whole`): `foundry cache verify` exits 0, every file under blobs/ hashes to its
own name (an unreachable blob with the wrong bytes would be reused by the next put_blob), every
snapshot folder holds every file of its manifest, and every ref names a manifest that exists.
The kill points are reached deterministically, never by a sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.kill_points import KILL_POINTS
from tests.hub_server import HubServer
from tests.test_download import BIG_FILE, REPO, SUBFOLDER, hub, tiny_artifact

SHARED_FIXTURES = (hub, tiny_artifact)  # test_download's hub and artifact, reused by name

FOUNDRY = str(Path(sys.executable).with_name("foundry"))


def foundry(
    *args: str, kill_at: str | None = None, timeout: float = 240, program: str = "foundry"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_KILL_AT"}
    if kill_at is not None:
        assert kill_at.partition(":")[0] in KILL_POINTS
        env["FOUNDRY_KILL_AT"] = kill_at
    exe = str(Path(sys.executable).with_name(program))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env)


def foundry_build(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return foundry(*args, kill_at=kill_at, timeout=900, program="foundry-build")


def killed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


def refs(home: Path) -> list[str]:
    folder = home / "cache" / "refs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_whole(home: Path) -> None:
    """Nothing in the store looks whole that is not (see the module docstring)."""
    result = foundry("cache", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    cache = home / "cache"
    for blob in (cache / "blobs" / "sha256").glob("*/*"):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    for snapshot in (cache / "snapshots").iterdir():
        manifest = json.loads(
            (cache / "manifests" / "sha256" / f"{snapshot.name}.json").read_text()
        )
        for rel, entry in manifest["files"].items():
            assert (snapshot / rel).stat().st_size == entry["size"], (snapshot, rel)
    for ref in (cache / "refs").iterdir():
        digest = ref.read_text().strip().split(":", 1)[1]
        assert (cache / "manifests" / "sha256" / f"{digest}.json").is_file(), ref


def test_every_kill_point_named_here_exists_in_the_code() -> None:
    """A renamed point would make its test kill nothing and pass: each must appear in the code."""
    root = Path(__file__).resolve().parents[1]
    code = "".join(p.read_text() for d in ("runtime", "compiler") for p in (root / d).rglob("*.py"))
    for point in KILL_POINTS:
        assert f'kill_point("{point}")' in code, point


# --- foundry cache import -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "point", ["store.blob:2", "store.register.blobs", "store.register.manifest", "store.snapshot"]
)
def test_import_killed_leaves_a_whole_store_and_the_next_import_succeeds(
    point: str, tiny_artifact: Path, foundry_home: Path
) -> None:
    killed(foundry("cache", "import", str(tiny_artifact), "--name", "crash-me", kill_at=point))
    # Before the ref is written, nothing is listed; after it (snapshot), the model is whole.
    assert refs(foundry_home) == (["crash-me"] if point == "store.snapshot" else [])
    assert_whole(foundry_home)
    again = foundry("cache", "import", str(tiny_artifact), "--name", "crash-me", "--json")
    assert again.returncode == 0, again.stderr
    assert refs(foundry_home) == ["crash-me"]
    assert_whole(foundry_home)


# --- foundry-build ---------------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["build.packed", "store.register.manifest"])
def test_build_killed_leaves_a_whole_store_and_the_next_build_succeeds(
    point: str, tiny_source, foundry_home: Path
) -> None:
    argv = [str(tiny_source("qwen2.5-0.5b")), "--target", "cpu-fp32", "--as", "built", "--json"]
    killed(foundry_build(*argv, kill_at=point))
    assert refs(foundry_home) == []
    assert_whole(foundry_home)
    again = foundry_build(*argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert refs(foundry_home) == ["built"]
    assert_whole(foundry_home)
    # No staging folder of the killed build survives the next run's sweep.
    assert not [p for p in (foundry_home / "cache" / "tmp").iterdir() if "build-" in p.name]


# --- foundry model download (the local hub) -----------------------------------------------------
@pytest.mark.parametrize("point", ["download.bytes:3", "download.fetched", "store.register.blobs"])
def test_download_killed_leaves_a_whole_store_and_the_next_run_succeeds(
    point: str, hub: HubServer, foundry_home: Path
) -> None:
    killed(foundry("model", "download", "tiny-qwen", kill_at=point))
    assert refs(foundry_home) == []
    assert_whole(foundry_home)
    again = foundry("model", "download", "tiny-qwen")
    assert again.returncode == 0, again.stderr
    assert refs(foundry_home) == ["tiny-qwen-cpu-fp32@1"]
    assert_whole(foundry_home)


TWIN_CATALOG = f"""\
schema: 1
models:
  - alias: twin
    name: twin
    display_name: Two variants that share every file
    publisher: Test
    license: apache-2.0
    task: chat
    family: qwen2
    max_output_tokens: 64
    context_length: 512
    variants:
      - {{device: cpu, provider: cpu, precision: fp32, size: 3000000,
         artifact: {{repo: {REPO}, revision: main, subfolder: {SUBFOLDER}}}}}
      - {{device: cpu, provider: cpu, precision: int8, size: 3000000,
         artifact: {{repo: {REPO}, revision: main, subfolder: {SUBFOLDER}}}}}
"""


def test_two_variant_downloads_sharing_a_file_never_write_one_partial_at_once(
    hub: HubServer, foundry_home: Path
) -> None:
    """The second download waits for the first one's .partial (it says so) instead of appending
    to it; both then register whole. Before the lock, the second resumed the first one's file,
    moved it away under it, and the first failed."""
    (foundry_home / "catalog" / "twin.yaml").write_text(TWIN_CATALOG)
    hub.stall_after[BIG_FILE] = 1_500_000
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_KILL_AT"}
    first = subprocess.Popen(
        [FOUNDRY, "model", "download", "twin-cpu-fp32:1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = None
    try:
        deadline = time.monotonic() + 120
        while not any(
            p.suffix == ".partial" and p.stat().st_size >= 1_500_000
            for p in (foundry_home / "downloads").glob("*")
        ):
            assert first.poll() is None and time.monotonic() < deadline, "first never stalled"
            time.sleep(0.05)
        second = subprocess.Popen(
            [FOUNDRY, "model", "download", "twin-cpu-int8:1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert second.stderr is not None
        waited = ""
        for line in second.stderr:  # blocks until the second prints or exits
            waited += line
            if "waiting for another download" in line:
                break
        assert "waiting for another download" in waited, waited
    finally:
        hub.release()
    first_err = first.communicate(timeout=240)[1]
    assert first.returncode == 0, first_err
    assert second is not None
    second_err = second.communicate(timeout=240)[1]
    assert second.returncode == 0, second_err
    assert refs(foundry_home) == ["twin-cpu-fp32@1", "twin-cpu-int8@1"]
    assert_whole(foundry_home)


# --- foundry cache gc ---------------------------------------------------------------------------
@pytest.mark.parametrize("point", ["store.gc.snapshot", "store.gc:1", "store.gc:2", "store.gc:3"])
def test_gc_killed_leaves_the_kept_model_whole_and_the_next_gc_finishes(
    point: str, tiny_artifact: Path, tmp_path: Path, foundry_home: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_artifact, other)
    config = json.loads((other / "genai_config.json").read_text())
    config["search"]["max_length"] = 77  # another genai_config blob, so gc has a blob to free
    (other / "genai_config.json").write_text(json.dumps(config))
    for folder, name in ((tiny_artifact, "kept"), (other, "dropped")):
        assert foundry("cache", "import", str(folder), "--name", name).returncode == 0
    assert foundry("cache", "remove", "dropped").returncode == 0
    plan = json.loads(foundry("cache", "gc", "--dry-run", "--json").stdout)
    assert (plan["snapshots"], plan["manifests"], plan["blobs"]) == (1, 1, 1)
    killed(foundry("cache", "gc", kill_at=point))
    assert refs(foundry_home) == ["kept"]
    # A snapshot is never left half-deleted under its real name (it is renamed out first).
    assert len(list((foundry_home / "cache" / "snapshots").iterdir())) == 1
    assert_whole(foundry_home)
    finished = foundry("cache", "gc", "--json")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(foundry("cache", "gc", "--dry-run", "--json").stdout)["blobs"] == 0
    # The dropped content comes back whole (its snapshot is rebuilt, never a half one reused).
    assert foundry("cache", "import", str(other), "--name", "dropped").returncode == 0
    assert_whole(foundry_home)


def test_verify_names_a_snapshot_that_lost_a_file(tiny_artifact: Path, foundry_home: Path) -> None:
    """A snapshot is served as is once it exists, so verify must see one that is not whole
    (before, it re-hashed the blobs only and called such a store clean)."""
    assert foundry("cache", "import", str(tiny_artifact), "--name", "kept").returncode == 0
    (snapshot,) = (foundry_home / "cache" / "snapshots").iterdir()
    (snapshot / "genai_config.json").unlink()
    result = foundry("cache", "verify")
    assert result.returncode != 0
    assert (
        "kept: snapshot file genai_config.json is missing or truncated"
        in result.stdout + result.stderr
    )


# --- foundry cache import of a bundle (an OCI image layout tar) ----------------------------------
@pytest.mark.parametrize("point", ["store.commit_blob:2", "store.register.manifest"])
def test_bundle_import_killed_leaves_a_whole_store_and_the_next_import_succeeds(
    point: str, tiny_artifact: Path, tmp_path: Path, foundry_home: Path, monkeypatch
) -> None:
    exporter = tmp_path / "exporter"
    monkeypatch.setenv("FOUNDRY_HOME", str(exporter))
    assert foundry("cache", "import", str(tiny_artifact), "--name", "bundled").returncode == 0
    bundle = tmp_path / "bundle.tar"
    exported = foundry("cache", "export", "bundled", "-o", str(bundle))
    assert exported.returncode == 0, exported.stderr
    monkeypatch.setenv("FOUNDRY_HOME", str(foundry_home))
    killed(foundry("cache", "import", str(bundle), kill_at=point))
    assert refs(foundry_home) == []
    assert_whole(foundry_home)
    again = foundry("cache", "import", str(bundle))
    assert again.returncode == 0, again.stderr
    assert refs(foundry_home) == ["bundled"]
    assert_whole(foundry_home)


# --- foundry cache pull (the registry) ------------------------------------------------------------
@pytest.mark.parametrize("point", ["oci.blob:2", "store.commit_blob:1", "store.register.manifest"])
def test_registry_pull_killed_resumes_and_registers_whole(
    point: str,
    tiny_artifact: Path,
    tmp_path: Path,
    foundry_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.registry_server import REGISTRY_BIN, start_registry

    if not Path(REGISTRY_BIN).exists():
        pytest.skip("no docker-registry: apt-get install -y docker-registry")
    registry = start_registry(tmp_path / "registry")
    try:
        pusher = tmp_path / "pusher"
        monkeypatch.setenv("FOUNDRY_HOME", str(pusher))
        assert foundry("cache", "import", str(tiny_artifact), "--name", "pulled").returncode == 0
        pushed = foundry("cache", "push", "pulled", registry.url("crash/pulled", "v1"))
        assert pushed.returncode == 0, pushed.stderr
        monkeypatch.setenv("FOUNDRY_HOME", str(foundry_home))
        killed(foundry("cache", "pull", registry.url("crash/pulled", "v1"), kill_at=point))
        assert refs(foundry_home) == []
        assert_whole(foundry_home)
        again = foundry("cache", "pull", registry.url("crash/pulled", "v1"))
        assert again.returncode == 0, again.stderr
        assert refs(foundry_home) == ["pulled"]
        assert_whole(foundry_home)
    finally:
        registry.stop()
