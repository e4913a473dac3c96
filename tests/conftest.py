"""Session fixtures shared across packages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "model_repository"


@pytest.fixture(scope="session")
def reference_repository() -> Path:
    """The repository the README's main job builds (every reference model exported and verified);
    built here from checkpoints/ when absent or stale, as scripts/build-repository.sh does."""
    subprocess.run(["bash", str(ROOT / "scripts" / "build-repository.sh"), str(REPOSITORY)], check=True, cwd=ROOT)
    return REPOSITORY
