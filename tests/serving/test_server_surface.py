"""Health (server and per model), reflection, message limits and settings."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from serving.settings import load_settings


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def test_health_for_the_server_and_each_model(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == serving
    assert stub.Check(health_pb2.HealthCheckRequest(service="debian-han"), timeout=5).status == serving
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="no-such-model"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [response] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "attnserve.v1.Attention", "grpc.health.v1.Health"} <= names


def test_a_request_over_4_mib_is_read_not_refused(channel):
    # gRPC's default 4 MiB limit would answer RESOURCE_EXHAUSTED; the server reads it and judges the text.
    text = b"x" * (5 * 2**20)
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(serialize_bytes(np.array([text], dtype=np.object_)))
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "this model takes at most 256 per item" in err.value.details()  # 64 characters of up to 4 bytes


def test_settings_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSERVE_GRPC__PORT", "9101")
    monkeypatch.setenv("ATTNSERVE_METRICS__TRITON_NAMES", "true")
    assert load_settings().grpc.port == 9101 and load_settings().metrics.triton_names
    config = tmp_path / "server.yaml"
    config.write_text("grpc:\n  port: 9202\n  workers: 2\nmetrics:\n  buckets: [0.001, 0.01, 0.1]\n")
    s = load_settings(config)
    # flags > environment > config file > defaults, field by field (nested sections merge)
    assert (s.grpc.port, s.grpc.workers, s.metrics.buckets) == (9101, 2, [0.001, 0.01, 0.1])
    assert (s.grpc.host, s.metrics.triton_names) == ("0.0.0.0", True)
    assert load_settings(config, grpc={"port": 9303}).grpc.port == 9303  # CLI flags win
    monkeypatch.delenv("ATTNSERVE_GRPC__PORT")
    assert load_settings(config).grpc.port == 9202  # the file, when the environment is silent
    monkeypatch.setenv("ATTNSERVE_DRAIN_DELAY_SECONDS", "0")
    monkeypatch.setenv("ATTNSERVE_EXIT_ON_ERROR", "true")
    config.write_text("drain_delay_seconds: 3\nexit_on_error: false\ngrace_seconds: 4\n")
    s = load_settings(config)
    assert (s.drain_delay_seconds, s.exit_on_error, s.grace_seconds) == (0, True, 4)
    assert not load_settings(config, exit_on_error=False).exit_on_error
    config.write_text("metrics:\n  buckets: [0.1, 0.01]\n")
    with pytest.raises(ValueError, match="strictly increasing"):
        load_settings(config)
    config.write_text("grpc:\n  prot: 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(config)
