"""`oci://HOST[:PORT]/REPO[:TAG|@sha256:…]`: where an artifact lives in a registry.

Grammar (the OCI distribution spec's, checked before a reference reaches a URL or a path):

    repository := component ("/" component)*      component := [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
    digest     := sha256:<64 hex>                   (runtime.names.parse_digest)

A loopback host (127.0.0.1, localhost, ::1) is spoken to over plain HTTP, as docker does;
every other host over HTTPS unless `FOUNDRY_REGISTRY_INSECURE=1`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from runtime.errors import InvalidReference
from runtime.names import parse_digest
from runtime.settings import env

__all__ = ["SCHEME", "Reference", "build_key_tag", "is_reference", "is_repository"]

SCHEME = "oci://"
DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}


def is_reference(text: str) -> bool:
    return text.startswith(SCHEME)


def is_repository(text: str) -> bool:
    """A repository name the distribution spec allows (`team/models`)."""
    return bool(_REPOSITORY.match(text))


def build_key_tag(build_key: str) -> str:
    """The tag a build key is published under (`bk-<64 hex>`): the registry as an action cache."""
    return "bk-" + parse_digest(build_key).split(":", 1)[1]


@dataclass(frozen=True)
class Reference:
    host: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Raises InvalidReference with the expected shape when `text` is not one."""
        if not is_reference(text):
            raise _invalid(text)
        host, _, rest = text[len(SCHEME) :].partition("/")
        digest = None
        if "@" in rest:
            rest, _, digest = rest.partition("@")
        repository, tag = rest, None
        if ":" in rest.rsplit("/", 1)[-1]:
            repository, _, tag = rest.rpartition(":")
        if not _HOST.match(host) or not _REPOSITORY.match(repository):
            raise _invalid(text)
        if tag is not None and not _TAG.match(tag):
            raise _invalid(text)
        if digest is not None:
            try:
                parse_digest(digest)
            except ValueError:
                raise _invalid(text) from None
        return cls(host, repository, tag, digest)

    @property
    def reference(self) -> str:
        """What goes after `/manifests/`: the digest if pinned, else the tag (default `latest`)."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def base_url(self) -> str:
        insecure = self.host.split(":")[0] in _LOOPBACK or self.host.startswith("[::1]")
        if env("FOUNDRY_REGISTRY_INSECURE") == "1":
            insecure = True
        return f"{'http' if insecure else 'https'}://{self.host}"

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = f"{SCHEME}{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text


def _invalid(text: str) -> InvalidReference:
    return InvalidReference(
        f"invalid registry reference {text!r}: expected oci://HOST/REPO[:TAG|@sha256:<hex>] "
        "(REPO in lowercase letters, digits, '.', '_', '-', '/')",
        hint="e.g. oci://127.0.0.1:5000/team/models:qwen2.5-0.5b-cpu-int4",
        param="reference",
    )
