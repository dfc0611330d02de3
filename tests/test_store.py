"""The content-addressed store as its users see it: files in the layout, ids, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.errors import InvalidDigest, InvalidName, ModelNotFound
from runtime.store import Store
from runtime.store.layout import Layout
from runtime.store.metadata import ModelMetadata

KEY = "sha256:" + "ab" * 32


def _folder(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = tmp_path / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def test_store_layout_matches_the_design_card(foundry_home):
    store = Store()
    assert store.root == foundry_home / "cache"
    for name in ("blobs/sha256", "manifests/sha256", "refs", "builds", "snapshots", "locks", "tmp"):
        assert (store.root / name).is_dir(), name
    import runtime.store.layout as layout_module

    assert "blobs/sha256/<hh>/<hex>" in (layout_module.__doc__ or "")
    assert Layout(store.root).blob(KEY) == store.root / "blobs/sha256/ab" / ("ab" * 32)


def test_registered_model_resolves_to_a_folder_with_the_same_bytes(foundry_home, tmp_path):
    src = _folder(tmp_path, "src", {"model.onnx": b"onnx" * 100, "sub/tok.json": b"{}"})
    model = Store().register(
        src, model_id="tiny:1", metadata=ModelMetadata(task="chat"), build_key=KEY
    )
    again = Store().resolve("tiny:1")
    assert again.manifest_digest == model.manifest_digest
    assert (again.path / "model.onnx").read_bytes() == b"onnx" * 100
    assert (again.path / "sub/tok.json").read_bytes() == b"{}"
    assert again.info == ModelMetadata(task="chat")
    assert Store().lookup_build(KEY) == model.manifest_digest


def test_identical_files_of_two_models_are_stored_once(foundry_home, tmp_path):
    store = Store()
    shared = b"tokenizer" * 1000
    store.register(_folder(tmp_path, "a", {"tok.json": shared, "m": b"a"}), model_id="a")
    store.register(_folder(tmp_path, "b", {"tok.json": shared, "m": b"b"}), model_id="b")
    blobs = [p for p in store.layout.blobs.glob("*/*")]
    assert len(blobs) == 3


def test_unknown_model_is_model_not_found_with_a_hint(foundry_home):
    with pytest.raises(ModelNotFound) as info:
        Store().resolve("nope")
    assert "nope" in str(info.value) and info.value.hint


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "/abs", "a/b", "..", "a..b", "", "x" * 300, "a:b:c", "a\\b", "model\n"],
    ids=repr,
)
def test_names_that_could_escape_the_store_are_refused(foundry_home, name):
    with pytest.raises(InvalidName):
        Store().resolve(name)


@pytest.mark.parametrize(
    "digest", ["sha256:zz", "sha256:" + "A" * 64, "md5:" + "a" * 64, "sha256:../../x"]
)
def test_malformed_digests_are_refused_before_any_path_is_built(foundry_home, digest):
    with pytest.raises(InvalidDigest):
        Store().layout.blob(digest)


def test_a_digest_with_a_trailing_newline_is_refused(foundry_home):
    with pytest.raises(InvalidDigest):
        Store().layout.blob("sha256:" + "a" * 64 + "\n")


def test_blobs_and_their_snapshot_links_are_read_only(foundry_home, tmp_path):
    """A snapshot file is a hard link to its blob: writing through it would change every model."""
    import stat

    store = Store()
    model = store.register(_folder(tmp_path, "m", {"w.bin": b"weights"}), model_id="ro")
    blob = store.layout.blob(model.manifest.files["w.bin"].digest)
    for path in (blob, model.path / "w.bin"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, path


def test_verify_names_the_damaged_model_and_gc_frees_unreachable_blobs(foundry_home, tmp_path):
    store = Store()
    model = store.register(_folder(tmp_path, "m", {"w.bin": b"weights" * 10}), model_id="dmg")
    assert store.verify() == []
    blob = store.layout.blob(model.manifest.files["w.bin"].digest)
    blob.chmod(0o644)
    blob.write_bytes(b"rotten")
    problems = store.verify()
    assert len(problems) == 1 and problems[0].startswith("dmg: w.bin is damaged")
    store.remove("dmg")
    plan = store.gc(dry_run=True)
    assert plan["blobs"] == 1 and blob.exists()
    assert store.gc()["blobs"] == 1 and not blob.exists()


def test_cache_cli_lists_verifies_and_removes(foundry_home, tmp_path):
    import json

    Store().register(
        _folder(tmp_path, "m", {"w": b"w"}), model_id="listed", metadata=ModelMetadata(task="chat")
    )
    foundry = [sys.executable, "-m", "runtime.cli"]
    out = subprocess.run(
        [*foundry, "cache", "list", "--json"], capture_output=True, text=True, check=True
    )
    assert [m["id"] for m in json.loads(out.stdout)["models"]] == ["listed"]
    out = subprocess.run([*foundry, "cache", "verify"], capture_output=True, text=True, check=True)
    assert "verified" in out.stdout
    bad = subprocess.run([*foundry, "cache", "remove", "../x"], capture_output=True, text=True)
    assert (
        bad.returncode == 2
        and bad.stderr.startswith("error: invalid model name")
        and "Traceback" not in bad.stderr
    )
    gone = subprocess.run([*foundry, "cache", "remove", "ghost"], capture_output=True, text=True)
    assert gone.returncode == 3 and "ghost" in gone.stderr
    subprocess.run(
        [*foundry, "cache", "remove", "listed"], capture_output=True, text=True, check=True
    )
    assert Store().list_models() == []


def test_kill_during_register_leaves_nothing_under_a_real_name(foundry_home, tmp_path):
    big = _folder(tmp_path, "big", {f"part{i}.bin": os.urandom(4 << 20) for i in range(8)})
    script = textwrap.dedent(
        f"""
        import time
        from runtime.progress import ProgressEvent
        from runtime.store import Store
        def slow(event: ProgressEvent) -> None:
            print("progress", flush=True)
            time.sleep(0.5)
        Store().register(__import__("pathlib").Path({str(big)!r}), model_id="big", progress=slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # at least one blob is written, the manifest is not
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(sweep=False)
    assert not store.has("big")
    assert list(store.layout.manifests.iterdir()) == []
    for blob in store.layout.blobs.glob("*/*"):  # blobs that exist are whole
        assert store.hash_file(blob)[0].endswith(blob.name)
    time.sleep(0.01)
    assert store.sweep_tmp(older_than=0) >= 0 and list(store.layout.tmp.iterdir()) == []


def test_gc_during_a_registration_in_another_process_waits_and_deletes_none_of_its_blobs(
    foundry_home, tmp_path
):
    """Process A has written its first blob (unreachable: no manifest yet) and pauses; process
    B runs `foundry cache gc`. gc must wait for A instead of freeing that blob."""
    folder = _folder(tmp_path, "m", {f"part{i}.bin": os.urandom(1 << 16) for i in range(3)})
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from runtime.store import Store
        def pause_after_first_blob(event):
            if not pathlib.Path({str(go)!r}).exists():
                print("first blob written", flush=True)
                while not pathlib.Path({str(go)!r}).exists():
                    time.sleep(0.02)
        Store().register(pathlib.Path({str(folder)!r}), model_id="m", progress=pause_after_first_blob)
        """
    )
    registering = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    try:
        assert registering.stdout is not None
        assert registering.stdout.readline() == "first blob written\n"
        gc = subprocess.Popen(
            [str(Path(sys.executable).with_name("foundry")), "cache", "gc"],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert gc.stderr is not None
        # Without the lock gc finishes at once (freeing the paused blob); with it, it waits.
        assert gc.stderr.readline() == "waiting for a registration in progress to finish\n"
    finally:
        go.touch()
    assert registering.wait(timeout=60) == 0
    assert gc.wait(timeout=60) == 0
    assert "freed 0 B" in gc.stdout.read()  # type: ignore[union-attr]
    store = Store(sweep=False)
    assert store.verify() == [] and len(store.resolve("m").manifest.files) == 3
