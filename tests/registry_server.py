"""A real OCI registry on loopback: Debian's `docker-registry` (CNCF distribution 2.8).

`.ci/run` installs it (`apt-get install docker-registry apache2-utils`); tests skip with that
command as the reason when the binary is missing. Storage is a folder the test owns, so a test
can damage a blob the way a compromised registry would.

`TokenServer` is docker's token protocol for real: the registry runs with `auth: token` and
trusts one self-signed certificate; the server checks a login (Basic) and answers with a JWT
signed RS256 by that certificate's key (openssl does the key, the certificate and each
signature, so no Python crypto package is needed), granting the scopes asked for.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

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


TOKEN_SERVICE = "foundry-test-registry"
TOKEN_ISSUER = "foundry-test-token-server"


@dataclass
class TokenServer:
    """A docker token server on loopback: `GET /token?service=&scope=…` with Basic auth."""

    workdir: Path
    users: dict[str, str]
    requests: list[dict[str, object]] = field(default_factory=list)  # what each call asked

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = self.workdir / "token.key", self.workdir / "token.crt"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", "/CN=foundry-test-token-server"),
                *("-keyout", str(self.key), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
        )
        pem = self.cert.read_text().split("-----")[2]  # the base64 DER between the markers
        self._x5c = "".join(pem.split())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, subject: str, scopes: list[str]) -> str:
        """A JWT distribution 2.8 accepts: RS256, x5c chain = our certificate, access per scope."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [_access(scope) for scope in scopes],
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name for it
                query = parse_qs(urlparse(self.path).query)
                scopes = [s for value in query.get("scope", []) for s in value.split()]
                user = _basic_user(self.headers.get("Authorization", ""), server.users)
                server.requests.append({"user": user, "scopes": scopes})
                if user is None or query.get("service") != [TOKEN_SERVICE]:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                self._reply(200, {"token": server.token(user, scopes), "expires_in": 300})

            def _reply(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _access(scope: str) -> dict[str, object]:
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


def _basic_user(header: str, users: dict[str, str]) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return None
    return user if users.get(user) == password else None


def start_registry(
    workdir: Path, *, htpasswd: str | None = None, token: TokenServer | None = None
) -> RunningRegistry:
    """Start `docker-registry serve` on a free loopback port; wait until /v2/ answers."""
    import httpx

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if htpasswd is not None:
        (workdir / "htpasswd").write_text(htpasswd + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: foundry-test\n    path: {workdir / 'htpasswd'}\n"
    if token is not None:
        auth = (
            f"auth:\n  token:\n    realm: {token.realm}\n    service: {TOKEN_SERVICE}\n"
            f"    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {token.cert}\n"
        )
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
