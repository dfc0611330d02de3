"""The CI definitions a team copies (ci/) parse, run only commands the CLI has, and build the matrix.

No CI platform is needed: each YAML file is parsed, every `foundry` / `foundry-build` command in
a step is parsed by the real click commands (an unknown subcommand or option fails here, not in
a user's pipeline), and each platform's job matrix must be exactly ci/matrix.yaml's entries.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

CI = Path(__file__).resolve().parents[1] / "ci"
PLACEHOLDER = re.compile(r"\$\{\{[^}]*\}\}|\$\([^)]*\)")


def _steps_commands(definition: Any) -> list[str]:
    """Every shell line of every step (`run:` in GitHub Actions, `script:` in Azure Pipelines)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("run", "script") and isinstance(value, str):
                    found.extend(line for line in value.splitlines() if line.strip())
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(definition)
    return found


def _foundry_invocations(line: str) -> list[list[str]]:
    argv_list = []
    for segment in re.split(r"\|\||&&|\||;", PLACEHOLDER.sub("X", line)):
        argv = shlex.split(segment)
        if argv and argv[0] in ("foundry", "foundry-build"):
            argv_list.append(argv)
    return argv_list


def _parse_with_the_real_cli(argv: list[str]) -> click.Command:
    """Resolve the subcommand and parse its options exactly as the installed entry point would."""
    from compiler.cli import main as build_main
    from runtime.cli import main as foundry_main

    root = foundry_main if argv[0] == "foundry" else build_main
    args = argv[1:]
    if root is build_main:
        args = ["matrix", *args[1:]] if args[0] == "--matrix" else args
        if args[0] not in build_main.list_commands(click.Context(build_main)):
            args = ["build", *args]
    command: click.Command = root
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"{' '.join(argv)}: no command {name!r}"
        command = sub
    command.make_context(command.name or "", list(args))  # raises on an unknown option
    return command


def _matrix_entries() -> set[tuple[str, str]]:
    from compiler.matrix import load_matrix

    return {(s.model, t) for s, t in load_matrix(CI / "matrix.yaml").entries()}


@pytest.mark.parametrize("name", ["github-actions.yml", "azure-pipelines.yml"])
def test_every_command_a_pipeline_runs_exists_in_the_cli(name):
    definition = yaml.safe_load((CI / name).read_text())
    invocations = [
        argv for line in _steps_commands(definition) for argv in _foundry_invocations(line)
    ]
    used = {_parse_with_the_real_cli(argv).name for argv in invocations}
    assert {"build", "verify", "matrix"} <= used  # build per job, verify, then the report


def test_the_matrix_file_validates_and_names_real_recipe_targets():
    from compiler.recipe import load_recipes

    targets = {t for r in load_recipes() for t in r.recipe.targets}
    entries = _matrix_entries()
    assert len(entries) == 6
    assert {t for _, t in entries} <= targets


def test_github_actions_spreads_exactly_the_matrix_over_its_jobs():
    jobs = yaml.safe_load((CI / "github-actions.yml").read_text())["jobs"]
    matrix = jobs["build"]["strategy"]["matrix"]
    assert {(m, t) for m in matrix["model"] for t in matrix["target"]} == _matrix_entries()
    assert jobs["build"]["strategy"]["fail-fast"] is False  # one bad entry does not cancel the rest
    assert jobs["report"]["needs"] == "build"


def test_azure_pipelines_spreads_exactly_the_matrix_over_its_jobs():
    jobs = {j["job"]: j for j in yaml.safe_load((CI / "azure-pipelines.yml").read_text())["jobs"]}
    matrix = jobs["build"]["strategy"]["matrix"]
    assert {(e["model"], e["target"]) for e in matrix.values()} == _matrix_entries()
    assert jobs["report"]["dependsOn"] == "build"


def test_ci_holds_the_two_pipelines_and_their_matrix_only():
    """One way to produce artifacts in CI: the older single-platform workflow and shell loop
    (ci/build-artifacts.yml, ci/build-matrix.sh) are what the matrix pipelines replaced."""
    assert sorted(p.name for p in CI.iterdir()) == [
        "azure-pipelines.yml",
        "github-actions.yml",
        "matrix.yaml",
    ]
