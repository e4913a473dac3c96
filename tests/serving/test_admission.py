"""Admission and deadlines over real gRPC: a bounded queue refuses the excess at once, expired and
cancelled requests are dropped before they are computed, and each is counted under its code in
ModelStatistics (as failures) and in Prometheus (attnserve_requests_total{code}).

The server runs in its own process, as in production: a 10 ms deadline leaves no room for a
server that shares its interpreter (and its GIL) with the test's clients.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from serving.grpc import convert
from serving.grpc._gen.inference import grpc_service_pb2 as pb
from serving.grpc._gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.serving.conftest import ROOT

MODEL = "dates-additive"
QUEUE = 8
DATES = [f"{d}. September 19{d + 50}" for d in range(1, 29)]


class Server:
    """`attnserve serve` in a subprocess on port 0; its gRPC address and metrics port."""

    def __init__(self, repository: Path) -> None:
        cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository), "--host", "127.0.0.1",
               "--grpc-port", "0", "--metrics-port", "0", "--models", MODEL,
               "--model-control-mode", "explicit"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ready = re.search(r"serving gRPC on port (\d+), metrics on port (\d+)", line)
            if ready:
                self.address, self.metrics_port = f"127.0.0.1:{ready.group(1)}", int(ready.group(2))
                return
        raise RuntimeError(f"the server exited with {self.proc.wait()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def srv(reference_repository: Path) -> Iterator[Server]:
    server = Server(reference_repository)
    yield server
    server.stop()


def text_request(n: int, **params) -> pb.ModelInferRequest:
    texts = np.array([DATES[i % len(DATES)].encode() for i in range(n)], dtype=np.object_)
    return convert.infer_request(MODEL, {"text": texts}, ["text"], params)


def slow_requests() -> list[pb.ModelInferRequest]:
    """Three batches of about a second each on the 2-core machine (64 texts, beams of 14 to 16:
    requests of different beam sizes never share a batch, so they run one after the other)."""
    return [text_request(64, beam_size=beam) for beam in (16, 15, 14)]


def model_stats(stub) -> pb.ModelStatistics:
    return stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL)).model_stats[0]


def metric_samples(srv: Server, name: str) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def requests_by_code(srv: Server) -> Counter:
    """attnserve_requests_total of MODEL by code (read after a gRPC call: the loop has then
    recorded every earlier request, as it records them in order)."""
    samples = metric_samples(srv, "attnserve_requests_total")
    return Counter({s.labels["code"]: int(s.value) for s in samples if s.labels["model"] == MODEL})


def load(stub, **batching) -> None:
    override = json.dumps({"dynamic_batching": batching})
    request = pb.RepositoryModelLoadRequest(model_name=MODEL)
    request.parameters["config"].string_param = override
    stub.RepositoryModelLoad(request, timeout=120)


async def occupied(address: str, work) -> tuple[object, bool]:
    """Run `work(stub)` while the model computes slow requests; returns its result and whether
    they were still computing when `work` ended."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        slow = [asyncio.ensure_future(stub.ModelInfer(r, timeout=120)) for r in slow_requests()]
        await asyncio.sleep(0.2)  # the first has started: the model was idle
        result = await work(stub)
        busy = not all(s.done() for s in slow)  # all were queued at once: the model never idled
        await asyncio.gather(*slow)
    return result, busy


async def fifty(stub, **kw) -> list[str]:
    """50 batch-1 requests at once; the status code of each."""

    async def one() -> str:
        try:
            await stub.ModelInfer(text_request(1, **kw.get("params", {})), timeout=kw.get("deadline", 120))
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    return await asyncio.gather(*(one() for _ in range(50)))


@pytest.mark.parametrize(
    "expiry",
    [
        # Triton's `timeout` parameter: 10 ms from the server's receipt of the request
        {"params": {"timeout": 10_000}},
        # the client's gRPC deadline; long enough that the server reads every request before it
        # passes (a request whose deadline passes before its message is read never reaches attnserve)
        {"deadline": 0.3},
    ],
    ids=["timeout-parameter-10ms", "grpc-deadline"],
)
def test_expired_requests_are_dropped_before_compute_and_counted(srv, expiry):
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        load(stub, max_queue_size=256)
        before, codes_before = model_stats(stub), requests_by_code(srv)
        codes, busy = asyncio.run(occupied(srv.address, lambda aio_stub: fifty(aio_stub, **expiry)))
        assert busy, "the slow request ended before the 50 expired; the test proves nothing"
        after, codes_after = model_stats(stub), requests_by_code(srv)
    assert codes == ["DEADLINE_EXCEEDED"] * 50
    assert codes_after - codes_before == Counter({"OK": 3, "DEADLINE_EXCEEDED": 50})
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 50
    # only the slow requests were computed: an execution of 64 items each
    assert after.execution_count - before.execution_count == 3
    assert after.inference_count - before.inference_count == 3 * 64


def test_the_timeout_parameter_and_a_cancelled_client_drop_queued_requests(srv):
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        load(stub, max_queue_size=256)
        before, codes_before = model_stats(stub), requests_by_code(srv)

        async def timeout_and_cancel(stub) -> tuple[str, str]:
            timed = stub.ModelInfer(text_request(1, timeout=10_000))  # Triton's `timeout`: 10 ms, no deadline
            cancelled = stub.ModelInfer(text_request(1))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            try:
                await timed
                timed_code = "OK"
            except grpc.aio.AioRpcError as exc:
                timed_code, message = exc.code().name, exc.details()
                assert "deadline passed while it waited in the queue" in message, message
            await asyncio.sleep(0.05)
            return timed_code, "CANCELLED" if cancelled.cancelled() else "?"

        (timed_code, cancelled_code), busy = asyncio.run(occupied(srv.address, timeout_and_cancel))
        assert busy, "the slow request ended first; the test proves nothing"
        after, codes_after = model_stats(stub), requests_by_code(srv)
    assert (timed_code, cancelled_code) == ("DEADLINE_EXCEEDED", "CANCELLED")
    assert codes_after - codes_before == Counter({"OK": 3, "DEADLINE_EXCEEDED": 1, "CANCELLED": 1})
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 2
    assert after.execution_count - before.execution_count == 3  # neither was computed


def test_a_full_queue_refuses_the_excess_and_answers_every_accepted_request(srv):
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        load(stub, max_queue_size=QUEUE)
        alone = stub.ModelInfer(text_request(8, beam_size=8), timeout=120)
        expected = convert.response_tensors(alone)["text"]
        before, codes_before = model_stats(stub), requests_by_code(srv)

        async def flood() -> tuple[list[str], list[int]]:
            async with grpc.aio.insecure_channel(srv.address) as aio_channel:
                stub = pb_grpc.GRPCInferenceServiceStub(aio_channel)
                health = health_pb2_grpc.HealthStub(aio_channel)

                async def one() -> str:
                    try:
                        response = await stub.ModelInfer(text_request(8, beam_size=8), timeout=300)
                    except grpc.aio.AioRpcError as exc:
                        assert f"its max_queue_size ({QUEUE})" in exc.details(), exc.details()
                        return exc.code().name
                    assert np.array_equal(convert.response_tensors(response)["text"], expected)
                    return "OK"

                calls = [asyncio.ensure_future(one()) for _ in range(200)]
                statuses = []
                while not all(c.done() for c in calls):  # health answers all along
                    check = await health.Check(health_pb2.HealthCheckRequest(service=MODEL), timeout=10)
                    statuses.append(check.status)
                    await asyncio.sleep(0.05)
                return [c.result() for c in calls], statuses

        codes, health_statuses = asyncio.run(flood())
        after, codes_after = model_stats(stub), requests_by_code(srv)
        load(stub, max_queue_size=256)
    counted = Counter(codes)
    assert set(counted) == {"OK", "RESOURCE_EXHAUSTED"} and counted["RESOURCE_EXHAUSTED"] >= 100, counted
    assert health_statuses and set(health_statuses) == {health_pb2.HealthCheckResponse.SERVING}
    assert codes_after - codes_before == counted
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == counted["RESOURCE_EXHAUSTED"]
    assert after.inference_stats.success.count - before.inference_stats.success.count == counted["OK"]


def test_a_batch_whose_client_left_stops_computing(srv):
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        before, codes_before = model_stats(stub), requests_by_code(srv)

        async def leave_while_computing() -> None:
            async with grpc.aio.insecure_channel(srv.address) as aio_channel:
                call = pb_grpc.GRPCInferenceServiceStub(aio_channel).ModelInfer(slow_requests()[0], timeout=120)
                inflight = lambda: [s.value for s in metric_samples(srv, "attnserve_inflight_requests")]  # noqa: E731
                while inflight() != [1]:  # the server has it
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)  # computing: about a second's work
                call.cancel()

        asyncio.run(leave_while_computing())
        answer = stub.ModelInfer(text_request(1), timeout=60)  # served after the abandoned batch
        assert convert.response_tensors(answer)["text"].tolist() == [b"1951-09-01"]
        after, codes_after = model_stats(stub), requests_by_code(srv)
    assert codes_after - codes_before == Counter({"CANCELLED": 1, "OK": 1}), "the slow request ended first"
    # the abandoned batch stopped between two decoder steps: it is no execution, its items no inferences
    assert (after.execution_count - before.execution_count, after.inference_count - before.inference_count) == (1, 1)
