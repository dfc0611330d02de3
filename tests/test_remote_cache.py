"""An OCI registry as the team's shared cache: one machine builds and pushes, others pull and run.

Against a real registry on loopback (Debian's docker-registry, CNCF distribution 2.8), through
the `foundry` CLI a user runs; each "machine" is its own FOUNDRY_HOME. The artifact is a tiny
synthetic Qwen2.5 built at cpu-int4 once per session (tests/conftest.py's tiny_source).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import run_foundry
from registry_server import (
    INSTALL,
    RunningRegistry,
    TokenServer,
    free_port,
    htpasswd_line,
    registry_available,
    start_registry,
)

pytestmark = pytest.mark.skipif(
    not registry_available(), reason=f"docker-registry is not installed ({INSTALL})"
)
MODEL = "tiny-int4"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    running = start_registry(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry that requires a login (htpasswd: ci / s3cret)."""
    running = start_registry(
        tmp_path_factory.mktemp("auth-registry"), htpasswd=htpasswd_line("ci", "s3cret")
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry with `auth: token` and its token server (docker's protocol, signed JWTs)."""
    tokens = TokenServer(tmp_path_factory.mktemp("token-server"), {"ci": "s3cret"})
    running = start_registry(tmp_path_factory.mktemp("token-registry"), token=tokens)
    yield running, tokens
    running.stop()
    tokens.stop()


@pytest.fixture(scope="session")
def remote_build(registry, tmp_path_factory: pytest.TempPathFactory, tiny_source):
    """`foundry-build SOURCE --target cpu-int4 --remote oci://…/team/cache` on the machine that
    compiles: `(argv, its FOUNDRY_HOME, its --json output)`."""
    home = tmp_path_factory.mktemp("builder-home")
    argv = [
        str(Path(sys.executable).with_name("foundry-build")),
        str(tiny_source("qwen2.5-0.5b")),
        "--target",
        "cpu-int4",
        "--as",
        MODEL,
        "--remote",
        registry.url("team/cache"),
        "--json",
    ]
    build = _foundry_build(argv, home)
    return argv, home, _json(build)


@pytest.fixture(scope="session")
def builder_home(remote_build) -> Path:
    return remote_build[1]


def _foundry_build(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env={**os.environ, "FOUNDRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _snapshot_bytes(home: Path, model_id: str) -> dict[str, bytes]:
    listing = _json(run_foundry("cache", "list", "--json", home=home))
    (entry,) = [m for m in listing["models"] if m["id"] == model_id]
    root = Path(entry["path"])
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr  # progress lines may come first; then one error
    assert all(line.startswith("hint: ") for line in lines[errors[0] + 1 :]), result.stderr
    return lines[errors[0]]


def _pushed(registry: RunningRegistry, home: Path, repository: str) -> dict:
    return _json(
        run_foundry("cache", "push", MODEL, registry.url(repository, "v1"), "--json", home=home)
    )


# --- push, pull, verify ----------------------------------------------------------------------
def test_a_second_machine_pulls_byte_identical_files_that_verify(registry, builder_home, tmp_path):
    first = _pushed(registry, builder_home, "team/models")
    assert first["uploaded_blobs"] + first["mounted_blobs"] == 9 and first["present_blobs"] == 0
    assert first["tags"][0] == "v1" and first["tags"][1].startswith("bk-")

    laptop = tmp_path / "laptop"
    pulled = _json(
        run_foundry("cache", "pull", registry.url("team/models", "v1"), "--json", home=laptop)
    )
    assert pulled["id"] == MODEL and pulled["fetched_blobs"] == 9
    assert (
        pulled["validation"]["generated_tokens"] == 4
    )  # it loaded and generated, as an import must
    assert _snapshot_bytes(laptop, MODEL) == _snapshot_bytes(builder_home, MODEL)
    builder = _json(run_foundry("cache", "list", "--json", home=builder_home))["models"]
    assert pulled["manifest_digest"] == builder[0]["digest"]  # the builder's manifest, unchanged
    verify = run_foundry("cache", "verify", home=laptop)
    assert verify.returncode == 0 and "every blob matches" in verify.stdout

    by_digest = f"oci://{registry.host}/team/models@{first['digest']}"
    again = _json(run_foundry("cache", "pull", by_digest, "--as", "pinned", "--json", home=laptop))
    assert again["fetched_blobs"] == 0 and again["cached_blobs"] == 9
    assert again["manifest_digest"] == pulled["manifest_digest"]


def test_a_second_push_sends_no_blob_again(registry, builder_home, tmp_path):
    home = _copy_of_store(builder_home, tmp_path)  # no note of other repositories: no mounts
    first = _pushed(registry, home, "team/twice")
    second = _pushed(registry, home, "team/twice")
    assert first["uploaded_blobs"] == 9 and first["mounted_blobs"] == 0
    assert first["sent_bytes"] >= first["total_bytes"] > 0
    assert second["uploaded_blobs"] == 0 and second["present_blobs"] == 9
    assert second["sent_bytes"] == 0
    assert second["digest"] == first["digest"]


def test_an_interrupted_pull_resumes_where_it_stopped(
    registry, builder_home, tmp_path, monkeypatch
):
    from runtime.oci.reference import Reference
    from runtime.oci.transfer import pull
    from runtime.store import Store

    _pushed(registry, builder_home, "team/resume")
    laptop = tmp_path / "laptop"
    monkeypatch.setenv("FOUNDRY_HOME", str(laptop))

    def ctrl_c_inside_the_weights(event) -> None:  # the small files come first, then 2.2 MB
        if event.phase == "download" and (event.completed or 0) > 1 << 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(Store(), Reference.parse(registry.url("team/resume", "v1")), ctrl_c_inside_the_weights)
    assert _json(run_foundry("cache", "list", "--json", home=laptop))["models"] == []
    (partial,) = (laptop / "cache" / "tmp").glob("*.partial")
    kept = partial.stat().st_size
    assert 0 < kept < 2_000_000  # part of model.onnx.data

    resumed = _json(
        run_foundry("cache", "pull", registry.url("team/resume", "v1"), "--json", home=laptop)
    )
    assert resumed["resumed_bytes"] == kept
    assert _snapshot_bytes(laptop, MODEL) == _snapshot_bytes(builder_home, MODEL)
    assert not list((laptop / "cache" / "tmp").glob("*.partial"))


def test_a_tampered_blob_in_the_registry_is_refused_and_nothing_is_registered(
    registry, builder_home, tmp_path
):
    pushed = _pushed(registry, builder_home, "team/tampered")
    store_manifest = _json(run_foundry("cache", "list", "--json", home=builder_home))["models"][0]
    weights = json.loads(
        (
            builder_home / "cache/manifests/sha256" / f"{store_manifest['digest'][7:]}.json"
        ).read_text()
    )["files"]["model.onnx.data"]["digest"]
    data = registry.blob_file(weights)
    original = data.read_bytes()
    data.write_bytes(
        original[:1000] + bytes(b ^ 0xFF for b in original[1000:1064]) + original[1064:]
    )
    try:
        laptop = tmp_path / "laptop"
        result = run_foundry("cache", "pull", registry.url("team/tampered", "v1"), home=laptop)
    finally:
        data.write_bytes(original)
    line = _assert_one_line_error(result, 5)
    assert "does not match its digest" in line and weights[:19] in line
    assert _json(run_foundry("cache", "list", "--json", home=laptop))["models"] == []
    assert not (laptop / "cache/blobs/sha256" / weights[7:9] / weights[7:]).exists()
    assert not list((laptop / "cache" / "tmp").glob("*.partial"))
    assert pushed["uploaded_blobs"] + pushed["mounted_blobs"] == 9


def _copy_of_store(home: Path, tmp_path: Path) -> Path:
    """Another machine holding the same model, which has never talked to any registry."""
    copy = tmp_path / "copy-home"
    shutil.copytree(home / "cache", copy / "cache", ignore=shutil.ignore_patterns("registries"))
    return copy


def test_a_push_to_a_new_repository_mounts_blobs_the_registry_holds_elsewhere(
    registry, builder_home, tmp_path
):
    home = _copy_of_store(builder_home, tmp_path)
    first = _pushed(registry, home, "team/staging")
    assert first["uploaded_blobs"] == 9 and first["mounted_blobs"] == 0

    mounted = _pushed(registry, home, "team/release")
    assert mounted["uploaded_blobs"] == 0 and mounted["mounted_blobs"] == 9
    manifest_bytes = len(_registry_manifest(registry, "team/release", "v1"))
    assert mounted["sent_bytes"] == 2 * manifest_bytes  # v1 and bk-<key>: no blob, no config byte
    assert mounted["digest"] == first["digest"]
    layers = registry.root / "docker/registry/v2/repositories/team/release/_layers/sha256"
    assert len(list(layers.iterdir())) == 10  # 9 blobs and the config, linked into the repo

    laptop = tmp_path / "laptop"
    pulled = _json(
        run_foundry("cache", "pull", registry.url("team/release", "v1"), "--json", home=laptop)
    )
    assert _snapshot_bytes(laptop, MODEL) == _snapshot_bytes(builder_home, MODEL)
    assert pulled["fetched_blobs"] == 9


def test_a_stale_mount_note_falls_back_to_an_upload(registry, builder_home, tmp_path):
    home = _copy_of_store(builder_home, tmp_path)
    _pushed(registry, home, "team/noted")
    (notes,) = (home / "cache/registries").iterdir()
    notes.write_text(notes.read_text().replace("team/noted", "team/gone"))  # never existed
    pushed = _pushed(registry, home, "team/fresh")
    assert pushed["uploaded_blobs"] == 9 and pushed["mounted_blobs"] == 0
    laptop = tmp_path / "laptop"
    run_foundry("cache", "pull", registry.url("team/fresh", "v1"), home=laptop)
    assert _snapshot_bytes(laptop, MODEL) == _snapshot_bytes(builder_home, MODEL)


def _registry_manifest(registry: RunningRegistry, repository: str, tag: str) -> bytes:
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    url = f"http://{registry.host}/v2/{repository}/manifests/{tag}"
    return httpx.get(url, headers=accept, timeout=30).content


# --- foundry-build --remote: the registry as an action cache --------------------------------
def test_foundry_build_with_a_remote_pulls_what_another_machine_compiled(remote_build, tmp_path):
    argv, builder, built = remote_build
    (first,) = built["models"]
    assert first["cache_hit"] is False and first["remote"] == "pushed"

    laptop = tmp_path / "laptop"
    (hit,) = _json(_foundry_build(argv, laptop))["models"]
    assert hit["remote"] == "hit" and hit["cache_hit"] is True
    assert hit["build_key"] == first["build_key"]
    assert hit["validation"] == first["validation"]  # the builder's figures travelled with it
    assert _snapshot_bytes(laptop, MODEL) == _snapshot_bytes(builder, MODEL)
    assert (laptop / "cache/builds" / first["build_key"][7:]).is_file()

    (again,) = _json(_foundry_build(argv, laptop))["models"]
    assert again["remote"] == "local" and again["cache_hit"] is True


def test_foundry_build_with_a_registry_that_is_down_builds_here_with_one_warning(
    tiny_source, tmp_path
):
    down = f"oci://127.0.0.1:{free_port()}/team/cache"  # nothing listens there
    argv = [
        str(Path(sys.executable).with_name("foundry-build")),
        str(tiny_source("qwen2.5-0.5b")),
        "--target",
        "cpu-int4",
        "--as",
        MODEL,
        "--remote",
        down,
        "--json",
    ]
    result = _foundry_build(argv, tmp_path / "offline-runner")
    (built,) = _json(result)["models"]
    assert built["remote"] == "unavailable" and built["cache_hit"] is False
    assert Path(built["path"], "model.onnx").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert f"remote cache {down} is unavailable (cannot reach the registry" in warnings[0]
    assert warnings[0].endswith("building here and pushing nothing")

    (again,) = _json(_foundry_build(argv, tmp_path / "offline-runner"))["models"]
    assert again["remote"] == "unavailable" and again["cache_hit"] is True  # not pushed either


# --- catalog variants whose source is a registry ---------------------------------------------
def _team_catalog(home: Path, reference: str, *, task: str = "chat") -> Path:
    """A user catalog file under `home` that overrides the built-in `qwen2.5-0.5b` alias with one
    variant, the artifact the team pushed to its registry."""
    path = home / "catalog" / "team.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "schema: 1\n"
        "models:\n"
        "  - alias: qwen2.5-0.5b\n"
        "    name: team-qwen2.5-0.5b\n"
        "    display_name: Team Qwen2.5 0.5B\n"
        "    publisher: our team\n"
        "    license: apache-2.0\n"
        f"    task: {task}\n"
        "    family: qwen2\n"
        "    max_output_tokens: 256\n"
        "    context_length: 2048\n"
        "    variants:\n"
        "      - device: cpu\n"
        "        provider: cpu\n"
        "        precision: int4\n"
        "        size: 3000000\n"
        f"        registry: {reference}\n"
    )
    return path


TEAM_VARIANT = "team-qwen2.5-0.5b-cpu-int4:1"


def test_a_catalog_alias_whose_variant_lives_in_a_registry_downloads_and_verifies(
    registry, builder_home, tmp_path
):
    reference = _pushed(registry, builder_home, "team/catalog")["reference"]
    laptop = tmp_path / "laptop"
    _team_catalog(laptop, reference)

    listed = _json(run_foundry("model", "list", "--json", home=laptop))
    (row,) = [r for r in listed["models"] if r["alias"] == "qwen2.5-0.5b"]
    assert row["id"] == TEAM_VARIANT and row["source"] == reference and row["prebuilt"] is True

    started = run_foundry("service", "start", "--ttl", "60", home=laptop)
    assert started.returncode == 0, started.stderr
    try:
        base_url = f"http://127.0.0.1:{json.loads((laptop / 'service.json').read_text())['port']}"
        items = httpx.get(f"{base_url}/foundry/list", timeout=60).json()
        (item,) = [i for i in items if i["name"] == TEAM_VARIANT]
        assert item["uri"] == item["parentModelUri"] == reference
        assert item["providerType"] == "OCI" and item["alias"] == "qwen2.5-0.5b"
    finally:
        run_foundry("service", "stop", home=laptop)

    downloaded = _json(run_foundry("model", "download", "qwen2.5-0.5b", "--json", home=laptop))
    assert downloaded["id"] == TEAM_VARIANT
    assert _snapshot_bytes(laptop, TEAM_VARIANT) == _snapshot_bytes(builder_home, MODEL)
    verify = run_foundry("cache", "verify", home=laptop)
    assert verify.returncode == 0 and "every blob matches" in verify.stdout
    again = run_foundry("model", "download", "qwen2.5-0.5b", home=laptop)
    assert again.returncode == 0 and again.stdout.startswith(f"{TEAM_VARIANT} is ready")


def test_a_registry_variant_of_another_task_is_refused_before_any_blob_is_fetched(
    registry, builder_home, tmp_path
):
    reference = _pushed(registry, builder_home, "team/catalog")["reference"]
    laptop = tmp_path / "laptop"
    _team_catalog(laptop, reference, task="embeddings")
    result = run_foundry("model", "download", "qwen2.5-0.5b", home=laptop)
    line = _assert_one_line_error(result, 2)
    assert "holds a chat model, but the catalog lists it as embeddings" in line
    assert not any((laptop / "cache/blobs/sha256").rglob("*"))


def test_a_malformed_registry_source_in_the_catalog_names_its_file_and_line(tmp_path):
    laptop = tmp_path / "laptop"
    path = _team_catalog(laptop, "oci://127.0.0.1:5000/Team/Upper:v1")
    line = _assert_one_line_error(run_foundry("model", "list", home=laptop), 2)
    assert f"{path}:13:" in line and "invalid registry reference" in line  # the variant


# --- auth and bad input ------------------------------------------------------------------------
def test_a_push_without_credentials_gets_a_one_line_error_and_a_login_then_works(
    auth_registry, builder_home, tmp_path
):
    target = auth_registry.url("team/models", "v1")
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    no_login = {"DOCKER_CONFIG": str(docker_config)}
    refused = run_foundry("cache", "push", MODEL, target, home=builder_home, env=no_login)
    line = _assert_one_line_error(refused, 2)
    assert f"registry {auth_registry.host} refused to let us push to 'team/models'" in line

    auth = base64.b64encode(b"ci:s3cret").decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": auth}}})
    )
    pushed = _json(
        run_foundry("cache", "push", MODEL, target, "--json", home=builder_home, env=no_login)
    )
    assert pushed["uploaded_blobs"] + pushed["mounted_blobs"] == 9

    laptop = tmp_path / "laptop"
    env_login = {"FOUNDRY_REGISTRY_USERNAME": "ci", "FOUNDRY_REGISTRY_PASSWORD": "s3cret"}
    pulled = _json(run_foundry("model", "download", target, "--json", home=laptop, env=env_login))
    assert pulled["id"] == MODEL and Path(pulled["path"], "model.onnx").is_file()


def test_a_token_registry_takes_a_login_from_env_or_docker_config_and_refuses_none(
    token_registry, builder_home, tmp_path
):
    registry, tokens = token_registry
    target = registry.url("team/models", "v1")
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    no_login = {"DOCKER_CONFIG": str(docker_config)}
    refused = run_foundry("cache", "push", MODEL, target, home=builder_home, env=no_login)
    line = _assert_one_line_error(refused, 2)
    assert f"registry {registry.host} refused to let us push to 'team/models' (401)" in line
    assert tokens.requests and all(r["user"] is None for r in tokens.requests)

    env_login = {
        **no_login,
        "FOUNDRY_REGISTRY_USERNAME": "ci",
        "FOUNDRY_REGISTRY_PASSWORD": "s3cret",
    }
    pushed = _json(
        run_foundry("cache", "push", MODEL, target, "--json", home=builder_home, env=env_login)
    )
    assert pushed["uploaded_blobs"] + pushed["mounted_blobs"] == 9
    granted = [r for r in tokens.requests if r["user"] == "ci"]
    assert len(granted) == 1  # one token answers the whole push, not one per request
    assert "repository:team/models:pull,push" in granted[0]["scopes"]

    auth = base64.b64encode(b"ci:s3cret").decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {f"https://{registry.host}": {"auth": auth}}})
    )
    laptop = tmp_path / "laptop"
    pulled = _json(run_foundry("cache", "pull", target, "--json", home=laptop, env=no_login))
    assert pulled["fetched_blobs"] == 9
    assert _snapshot_bytes(laptop, MODEL) == _snapshot_bytes(builder_home, MODEL)

    mirror = registry.url("team/mirror", "v1")  # a mount needs pull on team/models too: one token
    mounted = _json(
        run_foundry("cache", "push", MODEL, mirror, "--json", home=builder_home, env=env_login)
    )
    assert mounted["mounted_blobs"] == 9 and mounted["uploaded_blobs"] == 0
    issued = {"FOUNDRY_REGISTRY_TOKEN": tokens.token("ci", ["repository:team/mirror:pull"])}
    pulled = _json(run_foundry("cache", "pull", mirror, "--json", home=tmp_path / "ci", env=issued))
    assert pulled["fetched_blobs"] == 9  # a token issued beforehand is sent as it is

    wrong = {**no_login, "FOUNDRY_REGISTRY_USERNAME": "ci", "FOUNDRY_REGISTRY_PASSWORD": "nope"}
    stranger = run_foundry("cache", "pull", target, home=tmp_path / "stranger", env=wrong)
    assert "refused to let us pull from 'team/models' (401)" in _assert_one_line_error(stranger, 2)


@pytest.mark.parametrize(
    "reference",
    [
        "http://127.0.0.1:5000/team/models",
        "oci://127.0.0.1:5000/Team/Models",
        "oci://h/r:bad tag",
        "oci://h/r@sha256:xyz",
        "oci://h/../../etc",
    ],
)
def test_malformed_references_are_one_line_errors(reference, foundry_home):
    line = _assert_one_line_error(run_foundry("cache", "pull", reference, home=foundry_home), 2)
    assert "invalid registry reference" in line


def test_a_missing_tag_is_not_found(registry, foundry_home):
    result = run_foundry("cache", "pull", registry.url("team/nothing", "v9"), home=foundry_home)
    assert "does not exist in the registry" in _assert_one_line_error(result, 3)


def test_a_hostile_artifact_naming_a_path_outside_the_store_is_refused(registry, tmp_path):
    """Someone pushes an artifact whose manifest names `../../escaped`: nothing is written."""
    import msgspec

    from runtime.oci.format import (
        CONFIG_MEDIA_TYPE,
        LAYER_MEDIA_TYPE,
        MANIFEST_MEDIA_TYPE,
        TITLE,
        ArtifactConfig,
        Descriptor,
        OciManifest,
    )
    from runtime.oci.reference import Reference
    from runtime.oci.registry import Registry
    from runtime.store.manifest import FileEntry, Manifest, digest_bytes, encode_canonical

    payload = b"not a model"
    digest = digest_bytes(payload)
    rel = "../../escaped"
    manifest = Manifest(schema=1, model_id="evil", files={rel: FileEntry(digest, len(payload))})
    config = encode_canonical(ArtifactConfig(1, manifest, None))
    oci = OciManifest(
        schema_version=2,
        config=Descriptor(CONFIG_MEDIA_TYPE, digest_bytes(config), len(config)),
        layers=[Descriptor(LAYER_MEDIA_TYPE, digest, len(payload), {TITLE: rel})],
    )
    ref = Reference.parse(registry.url("evil/model", "v1"))
    with Registry(ref, push=True) as client:
        client.upload_bytes(payload, digest)
        client.upload_bytes(config, digest_bytes(config))
        client.put_manifest("v1", msgspec.json.encode(oci), MANIFEST_MEDIA_TYPE)

    home = tmp_path / "home"
    result = run_foundry("cache", "pull", str(ref), home=home)
    assert "unsafe path '../../escaped'" in _assert_one_line_error(result, 2)
    assert not (tmp_path / "escaped").exists() and not (home / "escaped").exists()
    assert _json(run_foundry("cache", "list", "--json", home=home))["models"] == []


# --- bundles: an OCI image layout in a tar, for machines with no registry --------------------------
def test_an_exported_bundle_imports_on_an_air_gapped_machine(builder_home, tmp_path):
    import tarfile

    bundle = tmp_path / "models.tar"
    exported = _json(
        run_foundry("cache", "export", MODEL, "-o", str(bundle), "--json", home=builder_home)
    )
    assert exported["models"] == [MODEL] and exported["blobs"] == 9
    with tarfile.open(bundle) as tar:  # the OCI image layout skopeo and oras read
        names = tar.getnames()
        layout = json.loads(tar.extractfile("oci-layout").read())
        index = json.loads(tar.extractfile("index.json").read())
    assert layout == {"imageLayoutVersion": "1.0.0"}
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == MODEL
    assert f"blobs/sha256/{entry['digest'][7:]}" in names
    assert all(n in ("oci-layout", "index.json") or n.startswith("blobs/sha256/") for n in names)

    offline = tmp_path / "offline"
    imported = _json(run_foundry("cache", "import", str(bundle), "--json", home=offline))
    assert [m["id"] for m in imported["models"]] == [MODEL]
    assert imported["validation"][MODEL]["generated_tokens"] == 4
    assert _snapshot_bytes(offline, MODEL) == _snapshot_bytes(builder_home, MODEL)
    assert run_foundry("cache", "verify", home=offline).returncode == 0

    again = _json(run_foundry("cache", "import", str(bundle), "--json", home=offline))
    assert again["skipped_blobs"] == 9  # already cached: read past, not written


def _hostile_tar(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """A tar whose members are (name, bytes) files or (name, None) symlinks to /etc/passwd."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "members, complaint",
    [
        ([("oci-layout", b"{}"), ("../../escaped", b"x")], "not part of an OCI image layout"),
        ([("blobs/sha256/../../escaped", b"x")], "not part of an OCI image layout"),
        ([("blobs/sha256/" + "a" * 64, None)], "not a regular file"),
        (
            [("blobs/sha256/" + "a" * 64, b"not the bytes that hash to aaaa")],
            "does not match its digest",
        ),
        (
            [("oci-layout", b"{}"), ("index.json", b'{"schemaVersion": 2, "manifests": []}')],
            "holds no models",
        ),
    ],
    ids=["dotdot", "dotdot-in-blobs", "symlink", "bad-digest", "empty-index"],
)
def test_a_hostile_bundle_is_refused_with_nothing_written(members, complaint, tmp_path):
    bundle = _hostile_tar(tmp_path / "hostile.tar", members)
    home = tmp_path / "home"
    result = run_foundry("cache", "import", str(bundle), home=home)
    assert complaint in _assert_one_line_error(result, 2)
    assert not (tmp_path / "escaped").exists() and not (home / "escaped").exists()
    assert _json(run_foundry("cache", "list", "--json", home=home))["models"] == []
    assert not any((home / "cache/blobs/sha256").rglob("*"))


# --- build matrices ---------------------------------------------------------------------------------
def test_a_matrix_reports_every_entry_goes_on_past_a_failure_and_reuses_the_registry(
    remote_build, registry, tiny_source, tmp_path
):
    _, _, built = remote_build
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "schema: 1\n"
        f"remote: {registry.url('team/cache')}\n"
        "sources:\n"
        f"  - model: {tiny_source('qwen2.5-0.5b')}\n"
        "    id: tiny\n"
        "    targets: [cpu-int3, cpu-int4]\n"
    )
    runner = tmp_path / "runner"
    argv = [str(Path(sys.executable).with_name("foundry-build")), "--matrix", str(matrix)]
    report = tmp_path / "report.json"
    first = _foundry_build([*argv, "--report", str(report)], runner)
    assert "1 of 2 matrix entries failed" in _assert_one_line_error(first, 7)
    bad, good = json.loads(report.read_text())["entries"]
    assert bad["target"] == "cpu-int3" and bad["status"] == "failed" and bad["error_code"]
    assert good["status"] == "remote hit" and good["id"] == "tiny-cpu-int4"
    assert good["build_key"] == built["models"][0]["build_key"]
    assert good["validation"] == built["models"][0]["validation"]
    assert good["peak_rss_bytes"] > 0

    again = _foundry_build([*argv, "--report", str(report)], runner)
    assert again.returncode == 7
    assert json.loads(report.read_text())["entries"][1]["status"] == "cache hit"


def test_a_matrix_file_with_a_typo_is_a_one_line_error(tmp_path, foundry_home):
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "schema: 1\nsources:\n  - model: x\n    targets: [cpu-int4]\n    synthetc: true\n"
    )
    argv = [str(Path(sys.executable).with_name("foundry-build")), "--matrix", str(matrix)]
    line = _assert_one_line_error(_foundry_build(argv, foundry_home), 2)
    assert "synthetc" in line and "matrix.yaml" in line
