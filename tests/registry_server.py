"""A real OCI registry on loopback: Debian's `docker-registry` (CNCF distribution 2.8).

`.ci/run` installs it (`apt-get install docker-registry apache2-utils`); tests skip with that
command as the reason when the binary is missing. Storage is a folder the test owns, so a test
can damage a blob the way a compromised registry would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
INSTALL = "apt-get install -y docker-registry apache2-utils"


@dataclass
class RunningRegistry:
    host: str  # 127.0.0.1:PORT
    root: Path  # its filesystem storage
    process: subprocess.Popen[bytes]

    def url(self, repository: str, tag: str | None = None) -> str:
        return f"oci://{self.host}/{repository}" + (f":{tag}" if tag else "")

    def blob_file(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        hex_ = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def registry_available() -> bool:
    return Path(REGISTRY_BIN).is_file()


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (distribution accepts only bcrypt), from apache2-utils."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RuntimeError(f"htpasswd is missing: {INSTALL}")
    return subprocess.run(
        [tool, "-nbB", user, password], check=True, capture_output=True, text=True
    ).stdout.strip()


def start_registry(workdir: Path, *, htpasswd: str | None = None) -> RunningRegistry:
    """Start `docker-registry serve` on a free loopback port; wait until /v2/ answers."""
    import httpx

    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    auth = ""
    if htpasswd is not None:
        (workdir / "htpasswd").write_text(htpasswd + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: foundry-test\n    path: {workdir / 'htpasswd'}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = (workdir / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "registry.log").read_text()[-2000:])
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return RunningRegistry(f"127.0.0.1:{port}", workdir / "data", process)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("docker-registry did not answer within 30 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
