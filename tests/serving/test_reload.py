"""Reload and unload fail nothing: a version is closed only when the last request holding it ends."""

from __future__ import annotations

import collections
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.server import RunningServer, grpc_stub, light_request, slow_request, start_server
from tests.helpers.wait import wait_until

ORT_FIRST = [{"name": "onnxruntime", "artifact": ""}, {"name": "torch", "artifact": "torch"}]
TORCH_FIRST = ORT_FIRST[::-1]


@pytest.fixture(scope="module")
def reloading(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own (these tests unload models) over sort-pointer and dates-additive."""
    root = tmp_path_factory.mktemp("reload")
    for name in ("sort-pointer", "dates-additive"):
        shutil.copytree(reference_repository / name, root / name)
    srv = start_server(root, model_control_mode="explicit")
    yield srv
    srv.stop()


@pytest.fixture
def stub(reloading) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc_stub(reloading.address) as s:
        yield s


def load_request(name: str, backends: list[dict] | None = None) -> pb.RepositoryModelLoadRequest:
    req = pb.RepositoryModelLoadRequest(model_name=name)
    if backends is not None:
        req.parameters["config"].string_param = json.dumps({"backends": backends})
    return req


def slow_call_in_flight(srv: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub) -> tuple[threading.Thread, dict]:
    """Start a slow dates-additive call and return once the server is running it."""
    result: dict = {}

    def call() -> None:
        try:
            result["response"] = stub.ModelInfer(slow_request(), timeout=120)
        except grpc.RpcError as exc:
            result["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()

    def in_flight() -> bool:
        assert worker.is_alive(), result  # it ended before the server had it in flight
        return srv.app.metrics.inflight_by_model().get("dates-additive", 0) >= 1

    wait_until(in_flight, "the request to be in flight", interval=0.01)
    return worker, result


def test_a_request_that_arrived_before_an_unload_is_answered(reloading: RunningServer, stub):
    held = reloading.app.repository.get("dates-additive")
    worker, result = slow_call_in_flight(reloading, stub)
    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="dates-additive"))
    assert not held.closed  # the running request still holds it
    with pytest.raises(grpc.RpcError) as err:  # a request arriving after the unload
        stub.ModelInfer(slow_request(), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "model 'dates-additive' is not ready: unloaded"
    worker.join(timeout=120)
    assert "response" in result, f"the in-flight call failed: {result.get('error')}"
    assert len(result["response"].raw_output_contents) == 4
    assert held.closed  # closed by the last request holding it
    stub.RepositoryModelLoad(load_request("dates-additive"))
    assert stub.ModelInfer(slow_request(), timeout=120).raw_output_contents


def test_a_swap_fails_no_running_request(reloading: RunningServer, stub):
    held = reloading.app.repository.get("dates-additive")
    worker, result = slow_call_in_flight(reloading, stub)
    stub.RepositoryModelLoad(load_request("dates-additive", TORCH_FIRST))
    swapped = reloading.app.repository.get("dates-additive")
    assert swapped is not held and swapped.default_backend == "torch" and not held.closed
    worker.join(timeout=120)
    assert "response" in result, f"the in-flight call failed: {result.get('error')}"
    assert held.closed and not swapped.closed
    stub.RepositoryModelLoad(load_request("dates-additive"))  # back to config.yaml
    assert swapped.closed


def requests_by_code(srv: RunningServer, model: str) -> collections.Counter[str]:
    """attnserve_requests_total of `model`, summed over its other labels, by status code."""
    srv.settle()
    counts: collections.Counter[str] = collections.Counter()
    for metric in srv.app.registry.collect():
        for sample in metric.samples:
            if sample.name == "attnserve_requests_total" and sample.labels["model"] == model:
                counts[sample.labels["code"]] += int(sample.value)
    return counts


@dataclass
class Call:
    sent: float
    done: float
    code: str
    details: str


def test_swaps_and_unloads_under_8_clients_fail_nothing(reloading: RunningServer, stub):
    """40 backend swaps, then 20 unload/load cycles, while 8 clients call sort-pointer back to back.

    Swaps: every call OK. Cycles: a call made wholly while the model was unloaded is UNAVAILABLE,
    one made wholly while it was loaded is OK, one that overlaps an unload or load either (never
    INTERNAL); and the server answered exactly the calls the clients saw answered."""
    stop = threading.Event()
    calls: list[list[Call]] = [[] for _ in range(8)]

    def client(out: list[Call]) -> None:
        with grpc.insecure_channel(reloading.address) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    order = np.frombuffer(infer(light_request(), timeout=30).raw_output_contents[0], "<i8")
                    code, details = ("OK" if order.tolist() == [3, 1, 0, 4, 2] else "WRONG ANSWER"), ""
                except grpc.RpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
                out.append(Call(sent, time.monotonic(), code, details))

    # the server's count: every request's record, as the data plane writes it (Prometheus series
    # are removed at each unload, so its counters restart with every load)
    written: collections.Counter[str] = collections.Counter()
    sink = reloading.app.dataplane.sink
    write = sink.write

    def counting(record) -> None:
        if record.name == "sort-pointer":
            written[record.code] += 1
        write(record)

    sink.write = counting  # type: ignore[method-assign]
    clients = [threading.Thread(target=client, args=(out,)) for out in calls]
    for c in clients:
        c.start()
    try:
        wait_until(lambda: all(calls), "every client's first call", interval=0.01)
        swaps_began = time.monotonic()
        for i in range(40):
            stub.RepositoryModelLoad(load_request("sort-pointer", TORCH_FIRST if i % 2 == 0 else ORT_FIRST))
            time.sleep(0.01)
        swaps_ended = time.monotonic()
        windows: list[tuple[float, float, str]] = []  # (from, to, the code every call wholly inside gets)
        loaded_since = swaps_ended
        for _ in range(20):
            t0 = time.monotonic()
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="sort-pointer"))
            t1 = time.monotonic()
            windows.append((loaded_since, t0, "OK"))
            time.sleep(0.03)
            t2 = time.monotonic()
            stub.RepositoryModelLoad(load_request("sort-pointer"))
            loaded_since = time.monotonic()
            windows.append((t1, t2, "UNAVAILABLE"))
            time.sleep(0.03)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
        reloading.settle()
        sink.write = write  # type: ignore[method-assign]
    since_last_load = requests_by_code(reloading, "sort-pointer")

    everything = [call for out in calls for call in out]
    codes = collections.Counter(call.code for call in everything)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, (codes, [c for c in everything if c.code not in ("OK",)][:5])
    assert all(c.code == "OK" for c in everything if swaps_began <= c.sent and c.done <= swaps_ended)
    assert all(c.details == "model 'sort-pointer' is not ready: unloaded" for c in everything if c.code != "OK")
    judged = collections.Counter()
    for lo, hi, expected in windows:
        inside = [c for c in everything if lo <= c.sent and c.done <= hi]
        assert all(c.code == expected for c in inside), (expected, [c for c in inside if c.code != expected][:3])
        judged[expected] += len(inside)
    assert judged["OK"] > 0 and judged["UNAVAILABLE"] > 0  # both rules were put to the test
    # exact accounting: the server counted, by status code, exactly the answers the clients got
    assert written == codes
    assert since_last_load["OK"] <= codes["OK"]  # Prometheus: only the calls since the last load
