"""Tiny random-weight checkpoints of every family (tests/helpers/tiny.py), trained a few steps, for export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.train import train
from tests.helpers.tiny import TINY, fixture_docs


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """family -> checkpoint folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    with fixture_docs():
        for family, recipe in TINY.items():
            train(recipe, root / recipe.name, progress=False, evaluate=False)
            out[family] = root / recipe.name
    return out
