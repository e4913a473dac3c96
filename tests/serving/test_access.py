"""Model control mode and bearer tokens over real gRPC channels to real servers."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cli.main import main
from client import AsyncClient, Client, ClientError
from protocol.codec import infer_request
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.paths import ROOT
from tests.helpers.server import RunningServer, start_server

MODEL = "dates-additive"
DATE = "Freitag, 2. September 1983"
INFER_TOKEN, CONTROL_TOKEN = secrets.token_urlsafe(24), secrets.token_urlsafe(24)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _infer_request() -> pb.ModelInferRequest:
    return infer_request(MODEL, {"text": np.array([DATE.encode()], dtype=np.object_)}, ["text"], None, "")


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        call(*args, timeout=30, **kwargs)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def default_server(reference_repository: Path) -> Iterator[RunningServer]:
    srv = start_server(reference_repository, models=[MODEL])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def guarded_server(reference_repository: Path, caplog_records: list[logging.LogRecord]) -> Iterator[RunningServer]:
    """Explicit model control, an infer token and a control token (from the environment's setting names)."""
    srv = start_server(
        reference_repository,
        models=[MODEL],
        model_control_mode="explicit",
        auth={"infer_token": INFER_TOKEN, "control_token": CONTROL_TOKEN},
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def caplog_records() -> Iterator[list[logging.LogRecord]]:
    """Every log record of the module's servers (start-up and calls), to look for tokens in."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, root = Keep(logging.DEBUG), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture()
def stub_of(request: pytest.FixtureRequest):
    channels: list[grpc.Channel] = []

    def make(server: RunningServer) -> pb_grpc.GRPCInferenceServiceStub:
        channel = grpc.insecure_channel(server.address)
        channels.append(channel)
        return pb_grpc.GRPCInferenceServiceStub(channel)

    yield make
    for c in channels:
        c.close()


# --- model control mode ---------------------------------------------------------------------


def test_default_mode_refuses_load_and_unload_with_how_to_enable(default_server: RunningServer, stub_of):
    stub = stub_of(default_server)
    for call, request in (
        (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=MODEL)),
        (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=MODEL)),
        (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="dates-dot")),
    ):
        code, details = code_of(call, request)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert details.startswith("model control is disabled on this server (model_control_mode: none)")
        assert "--model-control-mode explicit" in details and "ATTNSERVE_MODEL_CONTROL_MODE=explicit" in details
    # nothing changed: the model still serves, the refused one was never loaded
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready
    assert code_of(stub.ModelInfer, _infer_request())[0] == grpc.StatusCode.OK
    index = {m.name for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models}
    assert index == {MODEL}


def test_default_mode_leaves_everything_else_open(default_server: RunningServer, stub_of):
    stub = stub_of(default_server)
    assert code_of(stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL))[0] == grpc.StatusCode.OK
    assert code_of(stub.TraceSetting, pb.TraceSettingRequest())[0] == grpc.StatusCode.UNIMPLEMENTED


def test_tritonclient_sees_the_refusal(default_server: RunningServer):
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(default_server.address)
    with pytest.raises(InferenceServerException, match="model control is disabled") as info:
        client.unload_model(MODEL)
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert client.is_model_ready(MODEL)


# --- tokens ---------------------------------------------------------------------------------


def test_control_needs_the_control_token(guarded_server: RunningServer, stub_of):
    stub = stub_of(guarded_server)
    unload = pb.RepositoryModelUnloadRequest(model_name=MODEL)
    code, details = code_of(stub.RepositoryModelUnload, unload)
    assert (code, details) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "RepositoryModelUnload needs a bearer token with the 'control' scope: "
        "send the metadata 'authorization: Bearer <token>'",
    )
    code, details = code_of(stub.RepositoryModelUnload, unload, metadata=bearer(INFER_TOKEN))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'control' scope" in details
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=bearer(INFER_TOKEN)).ready

    stub.RepositoryModelUnload(unload, metadata=bearer(CONTROL_TOKEN), timeout=30)
    assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=bearer(INFER_TOKEN)).ready
    load = pb.RepositoryModelLoadRequest(model_name=MODEL)
    assert code_of(stub.RepositoryModelLoad, load)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(stub.RepositoryModelLoad, load, metadata=bearer(INFER_TOKEN))[0] == grpc.StatusCode.PERMISSION_DENIED
    stub.RepositoryModelLoad(load, metadata=bearer(CONTROL_TOKEN), timeout=60)
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), metadata=bearer(INFER_TOKEN)).ready
    # a refused call after an allowed one is still refused (handlers are cached per method)
    assert code_of(stub.RepositoryModelLoad, load)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_inference_needs_the_infer_token(guarded_server: RunningServer, stub_of):
    stub = stub_of(guarded_server)
    request = _infer_request()
    assert code_of(stub.ModelInfer, request, metadata=bearer(INFER_TOKEN))[0] == grpc.StatusCode.OK
    refusals = [
        ((), grpc.StatusCode.UNAUTHENTICATED, "ModelInfer needs a bearer token"),
        ((("authorization", f"Basic {INFER_TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED, "must be 'Bearer <token>'"),
        (bearer(INFER_TOKEN[:-1]), grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"),
        (bearer(CONTROL_TOKEN), grpc.StatusCode.PERMISSION_DENIED, "'infer' scope that ModelInfer needs"),
    ]
    for metadata, expected, text in refusals:
        code, details = code_of(stub.ModelInfer, request, metadata=metadata)
        assert code == expected and text in details
        assert INFER_TOKEN not in details and CONTROL_TOKEN not in details
    for call, req in (
        (stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL)),
        (stub.ModelReady, pb.ModelReadyRequest(name=MODEL)),
        (stub.RepositoryIndex, pb.RepositoryIndexRequest()),
        (stub.ModelStatistics, pb.ModelStatisticsRequest()),
        (stub.ServerMetadata, pb.ServerMetadataRequest()),
    ):
        assert code_of(call, req)[0] == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(call, req, metadata=bearer(INFER_TOKEN))[0] == grpc.StatusCode.OK


def test_probes_stay_open(guarded_server: RunningServer, stub_of):
    stub = stub_of(guarded_server)
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    with grpc.insecure_channel(guarded_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", MODEL):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
    assert main(["health", "--url", guarded_server.address]) == 0


def test_streams_and_unknown_methods_are_refused_too(guarded_server: RunningServer):
    with grpc.insecure_channel(guarded_server.address) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")

        def first(metadata=()):
            return next(iter(reflect.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)))

        with pytest.raises(grpc.RpcError) as info:
            first()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert first(bearer(INFER_TOKEN)).list_services_response.service

        unknown = channel.unary_unary("/no.such.Service/Method")
        assert code_of(unknown, b"")[0] == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(unknown, b"", metadata=bearer(INFER_TOKEN))[0] == grpc.StatusCode.UNIMPLEMENTED


def test_tritonclient_sends_tokens_as_headers(guarded_server: RunningServer):
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(guarded_server.address)
    infer, control = {"authorization": f"Bearer {INFER_TOKEN}"}, {"authorization": f"Bearer {CONTROL_TOKEN}"}
    inp = tc.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array([DATE.encode()], dtype=np.object_))
    assert client.infer(MODEL, [inp], headers=infer).as_numpy("text")[0] == b"1983-09-02"
    with pytest.raises(InferenceServerException, match="needs a bearer token") as info:
        client.infer(MODEL, [inp])
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as info:
        client.unload_model(MODEL, headers=infer)
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    client.load_model(MODEL, headers=control)  # a reload of the same files
    assert client.is_model_ready(MODEL, headers=infer)


def test_clients_send_their_token(guarded_server: RunningServer):
    with Client(guarded_server.address, token=INFER_TOKEN) as client:
        assert client.translate(MODEL, DATE)[0].text == "1983-09-02"
    with Client(guarded_server.address) as client, pytest.raises(ClientError) as info:
        client.translate(MODEL, DATE)
    assert info.value.code == "UNAUTHENTICATED"

    async def run() -> str:
        async with AsyncClient(guarded_server.address, token=INFER_TOKEN) as client:
            return (await client.translate(MODEL, DATE))[0].text

    assert asyncio.run(run()) == "1983-09-02"


def test_cli_token_from_flag_or_environment(
    guarded_server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    url = guarded_server.address
    monkeypatch.delenv("ATTNSERVE_TOKEN", raising=False)
    assert main(["client", "translate", MODEL, DATE, "--url", url]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    # options after the action, as after `client`
    # --token=...: a token_urlsafe token starts with "-" one time in 64, which argparse takes for an option
    assert main(["client", "translate", MODEL, DATE, "--url", url, f"--token={INFER_TOKEN}"]) == 0
    assert capsys.readouterr().out == f"{DATE} -> 1983-09-02\n"
    monkeypatch.setenv("ATTNSERVE_TOKEN", INFER_TOKEN)
    assert main(["client", "--url", url, "models"]) == 0
    assert MODEL in capsys.readouterr().out


def test_tokens_never_reach_the_log(guarded_server: RunningServer, caplog_records: list[logging.LogRecord]):
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog_records)
    assert "access: plaintext; tokens required for control, infer; model control explicit" in text
    assert INFER_TOKEN not in text and CONTROL_TOKEN not in text


def test_control_token_cannot_lift_mode_none(reference_repository: Path, stub_of):
    srv = start_server(reference_repository, models=[MODEL], auth={"control_token": CONTROL_TOKEN})
    try:
        stub = stub_of(srv)
        unload = pb.RepositoryModelUnloadRequest(model_name=MODEL)
        assert code_of(stub.RepositoryModelUnload, unload)[0] == grpc.StatusCode.UNAUTHENTICATED
        code, _ = code_of(stub.RepositoryModelUnload, unload, metadata=bearer(CONTROL_TOKEN))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        # only control is protected: inference is open
        assert code_of(stub.ModelInfer, _infer_request())[0] == grpc.StatusCode.OK
    finally:
        srv.stop()


def test_serve_flag_and_environment_reach_the_server(reference_repository: Path):
    """`attnserve serve --model-control-mode explicit` with a control token from the environment."""
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(reference_repository),
           "--grpc-port", "0", "--metrics-port", "0", "--host", "127.0.0.1", "--models", MODEL,
           "--model-control-mode", "explicit"]  # fmt: skip
    env = {**os.environ, "ATTNSERVE_AUTH__CONTROL_TOKEN": CONTROL_TOKEN}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        log = []
        for line in proc.stdout:
            log.append(line)
            if match := re.search(r"serving gRPC on port (\d+)", line):
                break
        assert match, "".join(log)
        assert any("access: plaintext; tokens required for control; model control explicit" in x for x in log)
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            unload = pb.RepositoryModelUnloadRequest(model_name=MODEL)
            assert code_of(stub.RepositoryModelUnload, unload)[0] == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(stub.RepositoryModelUnload, unload, metadata=bearer(CONTROL_TOKEN))[0] == grpc.StatusCode.OK
            assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10).ready
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert CONTROL_TOKEN not in "".join(log) + out
