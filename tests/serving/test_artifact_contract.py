"""The artifact contract: the server loads the files config.yaml names and checks every backend's
signature against the config's inputs and outputs at load, naming the component and tensor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from backends.loader import get_backend
from runtime.config import CONFIG_FILE
from runtime.errors import ModelLoadError
from serving.repository import ModelRepository, State

MODEL = "dates-additive"


@pytest.fixture
def copy(reference_repository: Path, tmp_path: Path) -> Path:
    """A private copy of one reference model (its version folder symlinked: it is not edited)."""
    root = tmp_path / "repo"
    (root / MODEL).mkdir(parents=True)
    shutil.copy(reference_repository / MODEL / CONFIG_FILE, root / MODEL / CONFIG_FILE)
    (root / MODEL / "1").symlink_to((reference_repository / MODEL / "1").resolve())
    return root


def edit(root: Path, change) -> None:
    path = root / MODEL / CONFIG_FILE
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def load(root: Path) -> ModelRepository:
    repo = ModelRepository(root, get_backend)
    repo.load(MODEL)
    return repo


def test_the_unbroken_copy_loads(copy: Path):
    repo = load(copy)
    assert repo.entry(MODEL).state is State.READY
    repo.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["components"]["encoder"]["outputs"][0].update(name="hidden"),
            "component 'encoder' on backend 'onnxruntime' does not match config.yaml: output 'hidden' is declared",
        ),
        (
            lambda c: c["components"]["decoder_step"]["inputs"][1].update(dtype="int64"),
            "component 'decoder_step' on backend 'onnxruntime' .*input 'state' is float32 in the graph, declared int64",
        ),
        (
            lambda c: c["components"]["encoder"]["outputs"][1]["axes"].__setitem__(1, 64),
            "output 'state' axis 1 is 128 in the graph, declared 64",
        ),
        (
            lambda c: c["components"]["decoder_step"]["inputs"].pop(0),
            r"the graph takes input\(s\) \['prev_ids'\] that config.yaml does not declare",
        ),
        (
            lambda c: c["components"]["encoder"].update(file="decoder_step.onnx"),
            "component 'encoder' on backend 'onnxruntime' does not match config.yaml",
        ),
        (
            lambda c: c["components"]["encoder"].update(file="missing.onnx"),
            "artifact file 'missing.onnx' does not exist",
        ),
        (
            lambda c: c["components"]["encoder"].update(file="../../../etc/passwd"),
            "resolves outside the model's version folder",
        ),
    ],
    ids=["renamed-output", "wrong-dtype", "wrong-size", "undeclared-input", "swapped-file", "missing", "escape"],
)
def test_a_hand_broken_config_is_refused_at_load_naming_the_tensor(copy: Path, change, message: str):
    edit(copy, change)
    repo = ModelRepository(copy, get_backend)
    with pytest.raises(ModelLoadError, match=message):
        repo.load(MODEL)
    entry = repo.entry(MODEL)
    assert entry.state is State.UNAVAILABLE and entry.reason  # the reason is kept for RepositoryIndex
    assert str(copy) not in entry.reason  # no host path in what clients read
