"""`foundry-build --remote oci://HOST/REPO`: a registry as the team's action cache (Bazel-style).

Per target: the build key is computed as usual; a local hit needs nothing; otherwise the
registry is asked for the tag `bk-<build key>` and, when someone has built it, the artifact is
pulled (verified and validated like any pull) instead of compiled. What is compiled here is
pushed afterwards under the model id's tag and its build-key tag, so the next machine hits.
A registry that is down or refuses us is an outage of a cache, not a build failure: one
warning line, the build goes on here, nothing is pushed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.errors import FoundryError, RegistryUnauthorized, RegistryUnavailable
from runtime.progress import ProgressEvent, ProgressFn, silent

if TYPE_CHECKING:
    from compiler.build import BuildPlan, BuildRequest, BuildResult
    from compiler.source import Source
    from runtime.oci.reference import Reference
    from runtime.store import Store

__all__ = ["REMOTE_DOWN", "RemoteBuild", "build_one", "build_with_remote", "model_tag"]

log = logging.getLogger(__name__)
# A registry that cannot be reached (or answers 5xx), or will not let us read: build locally.
# A tampered blob (DownloadCorrupt) is not among them: that is an attack to report, not an outage.
REMOTE_DOWN = (RegistryUnavailable, RegistryUnauthorized)


@dataclass(frozen=True)
class RemoteBuild:
    result: BuildResult
    remote: (
        str  # "hit" (pulled, not compiled), "pushed", "local" (a local hit, pushed if missing),
        # or "unavailable" (the registry could not be used: built or kept here, nothing pushed)
    )


def model_tag(model_id: str) -> str:
    """A model id as an OCI tag (':' is not allowed in tags)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", model_id)[:128]


def build_with_remote(
    request: BuildRequest, store: Store, remote: Reference, progress: ProgressFn = silent
) -> list[RemoteBuild]:
    """`compiler.build.build` with the registry consulted before and fed after each target."""
    from compiler.build import open_source, plan_target
    from compiler.recipe import load_recipes

    recipes = load_recipes()
    with open_source(request, store, progress) as source:
        return [
            build_one(
                plan_target(request, source, name, recipes, store), source, store, remote, progress
            )
            for name in request.targets
        ]


def build_one(
    plan: BuildPlan, source: Source, store: Store, remote: Reference | None, progress: ProgressFn
) -> RemoteBuild:
    """One planned target: local hit, else remote hit (pulled), else compiled and pushed."""
    from compiler.build import build_target
    from compiler.build_key import short
    from runtime.oci.transfer import lookup_build, push

    if remote is None:
        result = build_target(plan, source, store, progress)
        return RemoteBuild(result, "local" if result.cache_hit else "built")
    status = "local" if plan.cache_hit else "pushed"
    try:
        if not plan.cache_hit and lookup_build(
            store, remote, plan.build_key, progress, model_id=plan.model_id
        ):
            message = f"remote cache hit {short(plan.build_key)} from {remote}"
            progress(ProgressEvent("cache", message, done=True))
            status = "hit"
    except REMOTE_DOWN as exc:
        _fall_back(remote, exc, "building here and pushing nothing")
        return RemoteBuild(build_target(plan, source, store, progress), "unavailable")
    result = build_target(plan, source, store, progress)
    if status != "hit":
        ref = remote.with_tag(model_tag(plan.model_id))
        try:
            pushed = push(store, result.model.model_id, ref, progress)
        except REMOTE_DOWN as exc:  # it went away while we built: keep what was built
            _fall_back(remote, exc, f"{result.model.model_id} is built here but not pushed")
            return RemoteBuild(result, "unavailable")
        message = f"{pushed.reference} ({pushed.uploaded_blobs} blobs sent)"
        progress(ProgressEvent("push", message, done=True))
    return RemoteBuild(result, status)


def _fall_back(remote: Reference, exc: FoundryError, what: str) -> None:
    """The registry is a cache: when it cannot be reached or read, say so in one line and go on."""
    reason = " ".join(exc.message.split())  # a registry's error body may span lines
    log.warning("warning: remote cache %s is unavailable (%s); %s", remote, reason, what)
