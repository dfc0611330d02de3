"""Session fixtures: a temp FOUNDRY_HOME, tiny models built once, the real service."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def foundry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private FOUNDRY_HOME for one test."""
    home = tmp_path / "foundry-home"
    home.mkdir()
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    return home
