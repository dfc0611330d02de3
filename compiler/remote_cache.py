"""`foundry-build --remote oci://HOST/REPO`: a registry as the team's action cache (Bazel-style).

Per target: the build key is computed as usual; a local hit needs nothing; otherwise the
registry is asked for the tag `bk-<build key>` and, when someone has built it, the artifact is
pulled (verified and validated like any pull) instead of compiled. What is compiled here is
pushed afterwards under the model id's tag and its build-key tag, so the next machine hits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.progress import ProgressEvent, ProgressFn, silent

if TYPE_CHECKING:
    from compiler.build import BuildRequest, BuildResult
    from runtime.oci.reference import Reference
    from runtime.store import Store

__all__ = ["RemoteBuild", "build_with_remote", "model_tag"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteBuild:
    result: BuildResult
    remote: (
        str  # "hit" (pulled, not compiled), "pushed" or "local" (a local hit, pushed if missing)
    )


def model_tag(model_id: str) -> str:
    """A model id as an OCI tag (':' is not allowed in tags)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", model_id)[:128]


def build_with_remote(
    request: BuildRequest, store: Store, remote: Reference, progress: ProgressFn = silent
) -> list[RemoteBuild]:
    """`compiler.build.build` with the registry consulted before and fed after each target."""
    from compiler.build import build_target, open_source, plan_target
    from compiler.build_key import short
    from compiler.recipe import load_recipes
    from runtime.oci.transfer import lookup_build, push

    recipes = load_recipes()
    built: list[RemoteBuild] = []
    with open_source(request, store, progress) as source:
        for name in request.targets:
            plan = plan_target(request, source, name, recipes, store)
            status = "local" if plan.cache_hit else "pushed"
            if not plan.cache_hit and lookup_build(
                store, remote, plan.build_key, progress, model_id=plan.model_id
            ):
                progress(
                    ProgressEvent(
                        "cache",
                        f"remote cache hit {short(plan.build_key)} from {remote}",
                        done=True,
                    )
                )
                status = "hit"
            result = build_target(plan, source, store, progress)
            if status != "hit":
                pushed = push(
                    store,
                    result.model.model_id,
                    remote.with_tag(model_tag(plan.model_id)),
                    progress,
                )
                progress(
                    ProgressEvent(
                        "push",
                        f"{pushed.reference} ({pushed.uploaded_blobs} blobs sent)",
                        done=True,
                    )
                )
            built.append(RemoteBuild(result, status))
    return built
