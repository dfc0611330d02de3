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


# --- synthetic checkpoints [synth] -------------------------------------------------------
TINY_LAYERS, TINY_HIDDEN = 2, 64


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per session holding the tiny synthetic checkpoints."""
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def tiny_source(synthetic_dir: Path):
    """`tiny_source(alias) -> Path`: a tiny (2 layers, hidden 64) synthetic checkpoint, built once."""
    from compiler.synthetic import synthetic_source

    built: dict[str, Path] = {}

    def build(alias: str) -> Path:
        if alias not in built:
            built[alias] = synthetic_source(
                alias, synthetic_dir / alias, layers=TINY_LAYERS, hidden=TINY_HIDDEN
            )
        return built[alias]

    return build
