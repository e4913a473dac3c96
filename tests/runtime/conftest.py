"""Pipelines of the fake models (tests/helpers/fakes.py), read from a tiny repository written once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.pipelines.factory import build_pipeline
from tests.helpers.fakes import FAKES, Served, write_repository


@pytest.fixture(scope="session")
def fake_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("fake-repository"))


@pytest.fixture(scope="session")
def served(fake_repository: Path) -> Callable[[str], Served]:
    """kind in tests.helpers.fakes.FAKES -> its pipeline (vocabularies read from the repository) and runners."""

    def make(kind: str) -> Served:
        fake = FAKES[kind]()
        return Served(build_pipeline(fake.config, fake_repository / fake.name / "1"), fake.runners)

    return make
