"""`attnserve import onnx`: the graph copied in, probed, a commented config.yaml the repository
loads as written, and what it refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from backends.loader import get_backend
from cli import main as cli
from serving.repository import ModelRepository, State
from tests.helpers.onnx_graphs import backend_test_data, dense, masked_attention


def test_import_a_batchable_graph_then_pad_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    graph = masked_attention(tmp_path / "masked.onnx")
    repository = tmp_path / "repository"
    assert cli.main(["import", "onnx", str(graph), "--name", "masked", "--repository", str(repository)]) == 0
    said = capsys.readouterr().out
    assert "batchable: batch 1 and batch 3 ran" in said and "ran once on probe inputs: attention [1, 1, 1]" in said
    config_file = repository / "masked" / "config.yaml"
    assert (repository / "masked" / "1" / "model.onnx").read_bytes() == graph.read_bytes()
    text = config_file.read_text()
    assert "#   input  x" in text and "#   mask: {axis: 1, value: 0}" in text  # the graph's facts, as comments
    raw = yaml.safe_load(text)
    assert raw["max_batch_size"] == 4 and raw["dynamic_batching"]["max_queue_size"] == 256
    repo = ModelRepository(repository, get_backend)
    assert repo.load_all() == {}
    assert repo.get("masked").config.max_batch_size == 4
    # the user opts into padding by editing the file: the repository completes the crop
    raw["pad"] = {"x": {"axis": 1, "value": 0}, "mask": {"axis": 1, "value": False}}
    config_file.write_text(yaml.safe_dump(raw))
    repo.load("masked")
    assert repo.get("masked").config.crop == {"attention": [1, 2]}
    # the name is taken now
    assert cli.main(["import", "onnx", str(graph), "--name", "masked", "--repository", str(repository)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_import_a_graph_that_cannot_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    source = backend_test_data() / "pytorch-converted" / "test_Conv2d" / "model.onnx"
    repository = tmp_path / "repository"
    assert cli.main(["import", "onnx", str(source), "--name", "conv", "--repository", str(repository)]) == 0
    said = capsys.readouterr().out
    assert "not batchable: input '0' has shape [2, 3, 7, 5]: its first axis is fixed at 2" in said
    raw = yaml.safe_load((repository / "conv" / "config.yaml").read_text())
    assert raw["max_batch_size"] == 0 and "dynamic_batching" not in raw
    # asking it to batch afterwards is refused at load, naming the tensor
    (repository / "conv" / "config.yaml").write_text(yaml.safe_dump({**raw, "max_batch_size": 8}))
    repo = ModelRepository(repository, get_backend)
    assert "input '0' has shape [2, 3, 7, 5]" in repo.load_all()["conv"]
    assert repo.entry("conv").state is State.UNAVAILABLE


def test_a_graph_onnx_runtime_cannot_load_is_not_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    source = backend_test_data() / "simple" / "test_gradient_of_add" / "model.onnx"
    repository = tmp_path / "repository"
    repository.mkdir()
    assert cli.main(["import", "onnx", str(source), "--name", "grad", "--repository", str(repository)]) == 1
    assert "Gradient" in capsys.readouterr().err
    assert not (repository / "grad").exists()  # nothing half-written
    shutil.rmtree(repository)


def test_a_graph_with_external_data_is_imported_with_it(tmp_path: Path):
    """torch.onnx.export (dynamo) keeps the weights beside the graph, in `<file>.data`."""
    import onnx

    graph = dense(tmp_path / "build" / "dense.onnx", layers=1)
    model = onnx.load(str(graph))
    onnx.save(model, str(tmp_path / "dense.onnx"), save_as_external_data=True, location="dense.onnx.data")
    repository = tmp_path / "repository"
    assert (
        cli.main(["import", "onnx", str(tmp_path / "dense.onnx"), "--name", "dense", "--repository", str(repository)])
        == 0
    )
    assert (repository / "dense" / "1" / "dense.onnx.data").read_bytes() == (tmp_path / "dense.onnx.data").read_bytes()
    repo = ModelRepository(repository, get_backend)
    assert repo.load_all() == {} and repo.get("dense").config.max_batch_size == 4
