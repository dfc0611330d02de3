"""Registry credentials and the distribution spec's auth dance (Basic, or Bearer via a token realm).

Credentials for a host, first found wins:
  1. `FOUNDRY_REGISTRY_TOKEN` (a bearer token sent as is), or
     `FOUNDRY_REGISTRY_USERNAME` + `FOUNDRY_REGISTRY_PASSWORD`;
  2. docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): the
     host's `auths` entry (`auth` = base64 "user:pass", or `username`/`password`,
     or `registrytoken`). Credential helpers (`credsStore`) are not run: no code from config.

`RegistryAuth` is an httpx.Auth: it answers a 401's `WWW-Authenticate` challenge once, then sends
the answer on every later request (so chunk uploads are not sent twice). Request bodies are
always bytes, so a challenged request can be replayed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import httpx

from runtime.settings import env

__all__ = ["Credentials", "RegistryAuth", "credentials_for", "docker_config_path"]

_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None  # a bearer token used as is

    def basic(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def docker_config_path() -> Path:
    root = env("DOCKER_CONFIG")
    return (Path(root) if root else Path.home() / ".docker") / "config.json"


def credentials_for(host: str) -> Credentials | None:
    """What to answer `host`'s challenge with (environment first, then docker's config)."""
    if token := env("FOUNDRY_REGISTRY_TOKEN"):
        return Credentials(token=token)
    user, password = env("FOUNDRY_REGISTRY_USERNAME"), env("FOUNDRY_REGISTRY_PASSWORD")
    if user and password:
        return Credentials(user, password)
    return _from_docker_config(host)


def _from_docker_config(host: str) -> Credentials | None:
    try:
        auths = json.loads(docker_config_path().read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(entry, dict) or _host_of(str(key)) != host:
            continue
        if isinstance(entry.get("registrytoken"), str):
            return Credentials(token=entry["registrytoken"])
        if isinstance(entry.get("auth"), str):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                return None
            return Credentials(user, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None


def _host_of(key: str) -> str:
    """docker writes `auths` keys as `host`, `https://host` or `https://host/v1/`."""
    return key.split("://", 1)[-1].split("/", 1)[0]


class RegistryAuth(httpx.Auth):
    """httpx.Auth for one repository: answers Basic and Bearer challenges, remembers the answer."""

    def __init__(self, host: str, repository: str, actions: str):
        self.credentials = credentials_for(host)
        self.repository = repository
        self.actions = actions  # "pull" or "pull,push"
        self._header: str | None = None
        if self.credentials is not None and self.credentials.token:
            self._header = f"Bearer {self.credentials.token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header:
            request.headers["Authorization"] = self._header
        response = yield request
        if response.status_code != 401:
            return
        header = self._answer(response.headers.get("WWW-Authenticate", ""))
        if header is None or header == self._header:
            return  # nothing new to try: the 401 stands
        self._header = header
        request.headers["Authorization"] = header
        yield request

    def _answer(self, challenge: str) -> str | None:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            return self.credentials.basic() if self.credentials else None
        if scheme.lower() == "bearer":
            return self._bearer(dict(_PARAM.findall(rest)))
        return None

    def _bearer(self, params: dict[str, str]) -> str | None:
        """Fetch a token from the challenge's realm (docker's token protocol)."""
        realm = params.get("realm")
        if not realm:
            return None
        # What this request needs (the challenge's scope: a mount also names the repository it
        # mounts from) and what this client will need next, in one token, so that a push is
        # not challenged again at its first write.
        ours = f"repository:{self.repository}:{self.actions}"
        scopes = list(dict.fromkeys([*params.get("scope", "").split(), ours]))
        query: dict[str, str | list[str]] = {"scope": scopes}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if self.credentials and (basic := self.credentials.basic()):
            headers["Authorization"] = basic
        try:
            reply = httpx.get(realm, params=query, headers=headers, timeout=30)
            body = reply.json() if reply.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        return f"Bearer {token}" if isinstance(token, str) and token else None
