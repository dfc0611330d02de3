"""The house rules hold for the whole tree: ruff (lint + format, incl. the banned module-level
imports that keep `foundry --help` light) and mypy on runtime/ (STYLE.md section 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "runtime/", "--ignore-missing-imports"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-runtime"],
)
def test_the_tree_passes_the_house_checks(command: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
