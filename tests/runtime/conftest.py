"""Pipelines of the fake models (tests/fakes.py), read from a tiny repository written once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.decode import Runner
from runtime.pipelines.base import Pipeline
from runtime.pipelines.factory import build_pipeline
from tests.fakes import FAKES, write_repository


@dataclass
class Served:
    """A fake model's pipeline with its runners, called as the server calls it."""

    pipeline: Pipeline
    runners: dict[str, Runner]

    def run(self, inputs: Mapping[str, np.ndarray], **params: Any) -> dict[str, np.ndarray]:
        return self.pipeline.run(inputs, params, self.runners)


@pytest.fixture(scope="session")
def fake_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("fake-repository"))


@pytest.fixture(scope="session")
def served(fake_repository: Path) -> Callable[[str], Served]:
    """kind in tests.fakes.FAKES -> its pipeline (vocabularies read from the repository) and runners."""

    def make(kind: str) -> Served:
        fake = FAKES[kind]()
        return Served(build_pipeline(fake.config, fake_repository / fake.name / "1"), fake.runners)

    return make
