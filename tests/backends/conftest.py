"""One tiny exported model version (seq2seq: encoder + decoder_step), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.tiny import BACKEND_FAMILY, TINY


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """`<repo>/<model>`: config.yaml beside version 1 (ONNX graphs + torch/ checkpoint)."""
    import torch

    from exporters.export import export_checkpoint
    from models.train import train

    torch.set_num_threads(1)
    recipe = TINY[BACKEND_FAMILY]
    root = tmp_path_factory.mktemp("backends")
    ck = root / "checkpoints" / recipe.name
    train(recipe, ck, progress=False, evaluate=False)
    repo = root / "repo"
    export_checkpoint(ck, repo, examples=20, timing=False)
    return repo / recipe.name


@pytest.fixture(scope="session")
def version_dir(model_dir: Path) -> Path:
    return model_dir / "1"
