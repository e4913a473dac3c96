"""Process lifecycle: SIGTERM drains in-flight calls and exits 0; a broken model does not stop the others."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from runtime.tensors import serialize_bytes
from serving.grpc._gen.inference import grpc_service_pb2 as pb
from serving.grpc._gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.serving.conftest import start_server


def slow_request() -> pb.ModelInferRequest:
    texts = np.array([f"{d}. September 19{d + 50}".encode() for d in range(1, 29)] * 2, dtype=np.object_)
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    req.raw_input_contents.append(serialize_bytes(texts))
    req.parameters["backend"].string_param = "torch"
    req.parameters["beam_size"].int64_param = 16
    return req


def test_sigterm_finishes_in_flight_calls_and_exits_zero(reference_repository: Path):
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(reference_repository),
           "--grpc-port", "0", "--metrics-port", "0", "--host", "127.0.0.1", "--models", "dates-additive"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        port, log = None, []
        for line in proc.stdout:
            log.append(line)
            match = re.search(r"serving gRPC on port (\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "server did not start"
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
        time.sleep(0.3)  # the call is in flight
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
