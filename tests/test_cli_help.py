"""`foundry --help` and `foundry service status` stay light, and every error is one line.

Enforced by what is imported, not by a timer (STYLE.md section 2): each command runs in a
subprocess that dumps `sys.modules` when it ends, and no banned heavy module may appear.
Foundry Local's SDK runs `foundry service status` ten times a second while the service
starts, so that command is held to the same rule, running service or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_foundry

BANNED = (
    "compiler",
    "torch",
    "transformers",
    "olive",
    "optimum",
    "onnxruntime",
    "onnxruntime_genai",
    "litestar",
    "uvicorn",
    "rich",
    "huggingface_hub",
    "numpy",
    "httpx",
)

DUMP_MODULES = """
import json, sys
from runtime.cli import main
sys.argv = ["foundry", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
finally:
    sys.stderr.write("\\nMODULES=" + json.dumps(sorted(sys.modules)) + "\\n")
"""


def imported_by(args: list[str], home: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-c", DUMP_MODULES, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES="))), result


def banned_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in BANNED)


COMMANDS = [
    ["--help"],
    ["model", "--help"],
    ["service", "--help"],
    ["cache", "--help"],
    ["service", "status"],
    ["service", "status", "--json"],
    ["service", "start", "--help"],
    ["model", "run", "--help"],
    ["model", "ps", "--help"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_help_and_status_import_no_heavy_module(args: list[str], tmp_path: Path):
    modules, result = imported_by(args, tmp_path)
    assert "Traceback" not in result.stderr
    assert banned_in(modules) == []
    assert "runtime.cli" in modules  # the dump ran inside the CLI, so it can fail


def test_foundry_build_help_imports_no_heavy_module(tmp_path: Path):
    """The compiler's own CLI is light too until a build runs (its heavy half loads lazily)."""
    dump = DUMP_MODULES.replace("from runtime.cli import main", "from compiler.cli import main")
    env = {**os.environ, "FOUNDRY_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", dump, json.dumps(["--help"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr and "Usage:" in result.stdout
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES="))
    modules = set(json.loads(line.removeprefix("MODULES=")))
    assert "compiler.cli" in modules and "compiler.build" not in modules
    assert [m for m in banned_in(modules) if m.split(".")[0] != "compiler"] == []


def test_the_build_pipeline_imports_its_own_modules_but_no_heavy_library():
    """compiler/build.py imports the compiler's light modules at the top; torch, transformers,
    onnxruntime and Olive still load only when a pass runs."""
    dump = "import json, sys, compiler.build; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", dump], capture_output=True, text=True, timeout=60
    )
    modules = set(json.loads(result.stdout))
    assert {"compiler.build", "compiler.pack", "compiler.validate"} <= modules
    assert [m for m in banned_in(modules) if m.split(".")[0] != "compiler"] == []


def test_status_of_a_running_service_imports_no_heavy_module(tmp_path: Path):
    assert run_foundry("service", "start", home=tmp_path).returncode == 0
    try:
        modules, result = imported_by(["service", "status"], tmp_path)
        assert "is running on http://127.0.0.1:" in result.stdout
        assert banned_in(modules) == []
    finally:
        run_foundry("service", "stop", home=tmp_path)


def test_root_help_lists_every_group_and_the_environment_variables(tmp_path: Path):
    result = run_foundry("--help", home=tmp_path)
    assert result.returncode == 0
    for word in ("model", "service", "cache", "FOUNDRY_HOME", "FOUNDRY_API_KEY"):
        assert word in result.stdout


def test_service_help_lists_its_commands(tmp_path: Path):
    result = run_foundry("service", "--help", home=tmp_path)
    for command in ("start", "status", "stop", "restart"):
        assert command in result.stdout


# (args, exit code, start of the message): errors a user meets without a running service.
ERRORS = [
    (["model", "load", "tiny-qwen"], 5, "error: the foundry service is not running"),
    (["model", "unload", "tiny-qwen"], 5, "error: the foundry service is not running"),
    (["model", "ps"], 5, "error: the foundry service is not running"),
    (["service", "start", "--host", "0.0.0.0"], 2, "error: binding 0.0.0.0 exposes the service"),
    (
        ["service", "restart", "--host", "10.0.0.1"],
        2,
        "error: binding 10.0.0.1 exposes the service",
    ),
    (["cache", "remove", "no-such-model"], 3, "error: "),
]


@pytest.mark.parametrize(
    ("args", "code", "message"), ERRORS, ids=[" ".join(a) for a, _, _ in ERRORS]
)
def test_each_error_is_one_line_with_a_hint_and_its_exit_code(args, code, message, tmp_path: Path):
    result = run_foundry(*args, home=tmp_path)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(message)
    assert len(lines) <= 2 and all(x.startswith(("error: ", "hint: ")) for x in lines)
    assert "Traceback" not in result.stderr
