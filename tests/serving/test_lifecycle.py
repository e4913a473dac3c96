"""Process lifecycle: SIGTERM drains without losing an accepted call and exits 0; start-up
readiness and --exit-on-error; a broken model does not stop the others."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protocol.gen.attnserve.v1 import attention_pb2, attention_pb2_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from serving.grpc.drain import SHUTTING_DOWN
from tests.helpers.processes import Processes, onnx_only
from tests.helpers.server import light_request, slow_request, start_server

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def test_sigterm_finishes_in_flight_calls_and_exits_zero(reference_repository: Path, processes: Processes):
    args = ["--repository", str(reference_repository), "--models", "dates-additive"]
    served = processes.serve(args, {"ATTNSERVE_DRAIN_DELAY_SECONDS": "0"})
    proc, port, log = served.proc, served.port, served.log
    try:
        # the default core experiments were set before gRPC loaded, and the server runs with them
        assert any("gRPC core experiments: -event_engine_listener" in line for line in log), "".join(log)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        result: dict = {}

        def call() -> None:
            try:
                result["response"] = stub.ModelInfer(slow_request(), timeout=60)
            except grpc.RpcError as exc:
                result["error"] = exc

        worker = threading.Thread(target=call)
        worker.start()
        while served.inflight("dates-additive") < 1:  # the call is in flight
            assert worker.is_alive(), result
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        assert "response" in result, f"in-flight call failed: {result.get('error')}"
        assert len(result["response"].raw_output_contents) == 4
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 10 + 5  # grace period (10 s) plus margin
        with pytest.raises(grpc.RpcError) as err:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()


@dataclass
class Call:
    sent: float
    code: str
    details: str = ""


def looping_client(port: int, calls: list[Call]) -> None:
    """Send light batch-1 requests back to back until the first failure (a client told to go
    elsewhere, as UNAVAILABLE says, goes elsewhere)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            sent = time.monotonic()
            try:
                order = np.frombuffer(stub.ModelInfer(light_request(), timeout=30).raw_output_contents[0], "<i8")
                calls.append(Call(sent, "OK" if order.tolist() == [3, 1, 0, 4, 2] else "WRONG ANSWER"))
            except grpc.RpcError as exc:
                calls.append(Call(sent, exc.code().name, exc.details() or ""))
                return


@pytest.fixture(scope="module")
def light_repository(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    onnx_only(reference_repository, root)
    return root


@pytest.mark.parametrize("run", range(5))
def test_sigterm_under_load_loses_no_accepted_call(light_repository: Path, run: int, processes: Processes):
    """20 clients in a loop, SIGTERM mid-load: every call is answered OK or refused UNAVAILABLE
    (never CANCELLED), the server's count of answered requests equals the clients' OKs, calls
    keep succeeding while health says NOT_SERVING (the drain delay), and the exit code is 0."""
    delay, grace = 0.5, 10.0
    served = processes.serve(
        ["--repository", str(light_repository), "--models", "sort-pointer"],
        {"ATTNSERVE_DRAIN_DELAY_SECONDS": str(delay), "ATTNSERVE_GRACE_SECONDS": str(grace)},
    )
    try:
        calls: list[list[Call]] = [[] for _ in range(20)]
        clients = [threading.Thread(target=looping_client, args=(served.port, c)) for c in calls]
        for c in clients:
            c.start()
        while not all(c and c[0].code == "OK" for c in calls):  # every client is under way
            assert all(c.is_alive() for c in clients), calls
            time.sleep(0.01)
        time.sleep(0.3)
        sigterm = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status != NOT_SERVING:
                time.sleep(0.01)
            not_serving = time.monotonic()
            assert health.Check(health_pb2.HealthCheckRequest(service="sort-pointer"), timeout=5).status == NOT_SERVING
            infer = pb_grpc.GRPCInferenceServiceStub(channel)
            assert not infer.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
            assert not infer.ModelReady(pb.ModelReadyRequest(name="sort-pointer"), timeout=5).ready
        for c in clients:
            c.join(timeout=60)
        assert served.proc.wait(timeout=delay + grace + 5) == 0
        log = served.rest_of_log()
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    everything = [call for client in calls for call in client]
    codes = collections.Counter(call.code for call in everything)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, (codes, [c for c in everything if c.code != "OK"][:5])
    assert codes["UNAVAILABLE"] == 20  # each client's last call, refused once the drain began
    refused = sum(call.details == SHUTTING_DOWN for call in everything)
    # exact accounting: what the server says it answered and refused is what the clients got
    stopped = re.search(r"stopped: (\d+) inference request\(s\) answered, (\d+) failed, (\d+) call\(s\) refused", log)
    assert stopped, log
    assert (int(stopped.group(1)), int(stopped.group(2)), int(stopped.group(3))) == (codes["OK"], 0, refused)
    # refused calls came from the application (UNAVAILABLE "shutting down"), or, for a client
    # slower than the quiet period, from a transport already closed: UNAVAILABLE as well
    assert refused >= 1
    # the drain delay: health said NOT_SERVING while calls were still accepted and answered
    assert any(call.code == "OK" and call.sent > not_serving for call in everything)
    assert all(call.sent > sigterm for call in everything if call.code == "UNAVAILABLE")


def test_a_second_signal_skips_the_drain_delay(light_repository: Path, processes: Processes):
    served = processes.serve(["--repository", str(light_repository)], {"ATTNSERVE_DRAIN_DELAY_SECONDS": "600"})
    try:
        served.proc.send_signal(signal.SIGTERM)
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status != NOT_SERVING:
                time.sleep(0.01)
            infer = pb_grpc.GRPCInferenceServiceStub(channel)
            assert infer.ModelInfer(light_request(), timeout=5).raw_output_contents  # still serving
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=30) == 0  # not the 600 s delay
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def test_a_broken_model_is_unavailable_with_its_reason_and_others_serve(reference_repository: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    shutil.copytree(reference_repository / "sort-pointer", repo / "sort-pointer")
    shutil.copytree(reference_repository / "sort-pointer", repo / "broken")
    config = repo / "broken" / "config.yaml"
    config.write_text(config.read_text().replace("name: sort-pointer", "name: broken", 1))
    (repo / "broken" / "1" / "encoder.onnx").write_bytes(b"not an onnx file")
    srv = start_server(repo)
    try:
        channel = grpc.insecure_channel(srv.address)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="broken")).ready
        index = {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        assert index["broken"].state == "UNAVAILABLE" and "encoder.onnx" in index["broken"].reason
        req = pb.ModelInferRequest(model_name="broken")
        req.inputs.add(name="values", datatype="INT64", shape=[1, 3])
        req.raw_input_contents.append(np.array([[3, 1, 2]], dtype="<i8").tobytes())
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        req.model_name = "sort-pointer"
        order = np.frombuffer(stub.ModelInfer(req).raw_output_contents[0], dtype="<i8")
        assert order.tolist() == [1, 2, 0]
        channel.close()
    finally:
        srv.stop()


def readiness(address: str) -> tuple[bool, bool, int]:
    """(ServerLive, ServerReady, grpc.health.v1 status of "")."""
    with grpc.insecure_channel(address) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        return (
            infer.ServerLive(pb.ServerLiveRequest(), timeout=5).live,
            infer.ServerReady(pb.ServerReadyRequest(), timeout=5).ready,
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status,
        )


@pytest.mark.integration  # a server in process
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_not_ready_while_the_repository_is_missing_or_empty(tmp_path: Path, kind: str):
    repo = tmp_path / "repo"
    if kind == "empty":
        repo.mkdir()
    srv = start_server(repo)
    try:
        assert readiness(srv.address) == (True, False, NOT_SERVING)
        expected = "does not exist" if kind == "missing" else "holds no model"
        (problem,) = srv.app.readiness_problems()
        assert f"model repository {repo} {expected}" in problem and "bash scripts/build-repository.sh" in problem
    finally:
        srv.stop()


def broken_repository(reference: Path, root: Path) -> Path:
    """sort-pointer, and `broken`: the same model with an encoder.onnx that is not ONNX."""
    onnx_only(reference, root)
    (onnx_only(reference, root, as_name="broken") / "1" / "encoder.onnx").write_bytes(b"not an onnx file")
    return root


def test_not_ready_while_a_configured_model_failed_to_load(reference_repository: Path, tmp_path: Path):
    repo = broken_repository(reference_repository, tmp_path / "repo")
    srv = start_server(repo, models=["sort-pointer", "broken"], model_control_mode="explicit")
    try:
        assert readiness(srv.address) == (True, False, NOT_SERVING)
        reason = srv.app.repository.entry("broken").reason
        assert "encoder.onnx" in reason
        assert srv.app.readiness_problems() == [f"model 'broken' is not ready: {reason}"]
        with grpc.insecure_channel(srv.address) as channel:  # the good model serves meanwhile
            infer = pb_grpc.GRPCInferenceServiceStub(channel)
            assert infer.ModelReady(pb.ModelReadyRequest(name="sort-pointer")).ready
            assert infer.ModelInfer(light_request(), timeout=10).raw_output_contents
            # repaired and loaded: readiness follows the models
            shutil.copy(repo / "sort-pointer" / "1" / "encoder.onnx", repo / "broken" / "1" / "encoder.onnx")
            infer.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="broken"), timeout=60)
            for _ in range(500):
                if readiness(srv.address) == (True, True, SERVING):
                    break
                time.sleep(0.01)
            assert readiness(srv.address) == (True, True, SERVING)
    finally:
        srv.stop()


def test_exit_on_error_exits_non_zero_when_a_model_fails_to_load(
    reference_repository: Path, tmp_path: Path, processes: Processes
):
    repo = broken_repository(reference_repository, tmp_path / "repo")
    served = processes.serve(["--repository", str(repo), "--exit-on-error"], wait_port=False)
    assert served.proc.wait(timeout=60) == 1
    log = served.rest_of_log()
    assert "exiting (exit_on_error): model 'broken' failed to load" in log, log
    assert "serving gRPC on port" not in log
    served = processes.serve(["--repository", str(tmp_path / "missing"), "--exit-on-error"], wait_port=False)
    assert served.proc.wait(timeout=60) == 1
    log = served.rest_of_log()
    assert f"exiting (exit_on_error): model repository {tmp_path / 'missing'} does not exist; build one" in log, log


def test_a_closed_gate_refuses_calls_with_unavailable_and_still_answers_probes(light_repository: Path):
    srv = start_server(light_repository)
    try:
        srv.loop.call_soon_threadsafe(srv.app.grpc.gate.close)
        srv.settle()
        with grpc.insecure_channel(srv.address) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel)
            for call, request in [
                (infer.ModelInfer, light_request()),
                (infer.RepositoryIndex, pb.RepositoryIndexRequest()),
            ]:
                with pytest.raises(grpc.RpcError) as err:
                    call(request, timeout=5)
                assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            typed = attention_pb2_grpc.AttentionStub(channel)
            for stream in [  # streaming inference is refused too
                lambda: infer.ModelStreamInfer(iter([light_request()]), timeout=5),
                lambda: typed.TranslateStream(attention_pb2.TranslateRequest(model="x", texts=["y"]), timeout=5),
            ]:
                with pytest.raises(grpc.RpcError) as err:
                    list(stream())
                assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            assert readiness(srv.address) == (True, True, SERVING)  # probes answer (not drained here)
            assert infer.ModelReady(pb.ModelReadyRequest(name="sort-pointer"), timeout=5).ready
        assert srv.app.grpc.gate.refused == 4 and srv.app.grpc.gate.active == 0
    finally:
        srv.stop()
