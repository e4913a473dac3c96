"""A backend whose plugin cannot be imported (torch in the slim image) is skipped for the models that
list it beside others: they serve on the rest, and a request naming it gets INVALID_ARGUMENT saying
it is not installed. It still fails the load where it is a model's only backend or the chosen one.

The plugin is made missing by a backend_loader that raises ModelLoadError for it, as
`backends.loader.get_backend` does when the import fails; tests/deploy/test_images.py shows the
same with the real slim environment (no torch installed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest

import serving.app
from backends.base import Backend
from backends.loader import get_backend
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.errors import InvalidInput, ModelLoadError
from runtime.pipelines.base import bytes_tensor
from serving.repository import ModelRepository, State
from tests.helpers.fakes import BackendPool, copy_gru, sorter, write_model
from tests.helpers.server import start_server

NOT_INSTALLED = (
    "backend 'torch' (backends.torch:TorchBackend) failed to import: ModuleNotFoundError(\"No module named 'torch'\")"
)


class WithoutTorch:
    """A backend_loader with no torch plugin: importing it fails, as where torch is not installed."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __call__(self, name: str) -> type[Backend]:
        if name == "torch":
            raise ModelLoadError(NOT_INSTALLED)
        return self.loader(name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_model(root, copy_gru(), backends=[{"name": "torch"}, {"name": "numpy"}])  # torch is the default
    write_model(root, sorter(), backends=[{"name": "torch"}])  # torch is its only backend
    return root


def test_a_missing_plugin_is_skipped_where_the_model_has_other_backends(root: Path, caplog):
    repository = ModelRepository(root, WithoutTorch(BackendPool()))
    with caplog.at_level(logging.WARNING, logger="serving.repository"):
        failed = repository.load_all()
    assert failed == {"sorter": NOT_INSTALLED}  # its only backend: the load fails, with the reason
    assert repository.entry("sorter").state is State.UNAVAILABLE
    model = repository.get("copy-gru")
    assert repository.entry("copy-gru").state is State.READY
    # served on the backends that loaded; the next configured one is the default
    assert model.default_backend == "numpy" and sorted(model.backends) == ["numpy"]
    assert [b.name for b in model.config.backends] == ["numpy"]
    assert model.missing == {"torch": NOT_INSTALLED}
    name, runners = model.runners(None)
    out = model.pipeline.run({"text": bytes_tensor(["abc"])}, {}, runners)
    assert name == "numpy" and out["text"].tolist() == [b"ABC"]
    with pytest.raises(InvalidInput) as err:
        model.runners("torch")
    assert err.value.message == (
        "backend 'torch' is not installed on this server, so model 'copy-gru' does not run on it here; "
        "it runs on ['numpy']"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"model copy-gru: backend torch skipped (not installed): {NOT_INSTALLED}"]


def test_a_missing_plugin_chosen_as_the_default_still_fails_the_load(root: Path):
    repository = ModelRepository(root, WithoutTorch(BackendPool()), backend_override="torch")
    with pytest.raises(ModelLoadError) as err:
        repository.load("copy-gru")
    assert err.value.message == NOT_INSTALLED
    assert repository.entry("copy-gru").state is State.UNAVAILABLE


def test_a_model_none_of_whose_backends_is_installed_fails(root: Path):
    write_model(root, copy_gru(), backends=[{"name": "torch"}, {"name": "tensorrt"}])
    repository = ModelRepository(root, WithoutTorch(BackendPool()))
    with pytest.raises(ModelLoadError) as err:
        repository.load("copy-gru")
    assert err.value.message == (
        f"model 'copy-gru': none of its backends is installed: {NOT_INSTALLED}; "
        "unknown backend 'tensorrt'; installed: numpy, numpy-twin"
    )


@pytest.fixture(scope="module")
def server_without_torch(reference_repository: Path):
    """A real server over the reference repository whose torch plugin cannot be imported."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(serving.app, "get_backend", WithoutTorch(get_backend))
        srv = start_server(reference_repository)
    yield srv
    srv.stop()


def test_the_reference_repository_serves_on_onnx_runtime_alone(server_without_torch, reference_repository: Path):
    index = server_without_torch.app.repository.index()
    exported = sorted(p.parent.name for p in reference_repository.glob("*/config.yaml"))
    states = [(e.name, e.state, e.reason) for e in index]
    assert [e.name for e in index] == exported and all(e.state is State.READY for e in index), states
    with grpc.insecure_channel(server_without_torch.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        config = stub.ModelConfig(pb.ModelConfigRequest(name="dates-additive"), timeout=10).config
        assert config.backend == "onnxruntime" and config.parameters["backends"].string_value == "onnxruntime"
        request = pb.ModelInferRequest(model_name="sort-pointer")
        request.inputs.add(name="values", datatype="INT64", shape=[1, 5])
        request.raw_input_contents.append(np.array([[5, 3, 9, 1, 7]], dtype="<i8").tobytes())
        answer = stub.ModelInfer(request, timeout=30)
        assert answer.parameters["backend"].string_param == "onnxruntime"
        assert np.frombuffer(answer.raw_output_contents[0], "<i8").tolist() == [3, 1, 0, 4, 2]
        request.parameters["backend"].string_param = "torch"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "backend 'torch' is not installed on this server, so model 'sort-pointer' does not run on it here; "
        "it runs on ['onnxruntime']"
    )
