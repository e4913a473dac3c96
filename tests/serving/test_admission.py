"""Admission and deadlines over real gRPC and REST: a bounded queue refuses the excess at once, expired
and cancelled requests are dropped before they are computed, and each is counted under its code in
ModelStatistics (as failures) and in Prometheus (attnserve_requests_total{code}).

The server runs in its own process, as in production: a 10 ms deadline leaves no room for a
server that shares its interpreter (and its GIL) with the test's clients. Every request runs on
the torch backend (one scheduler, one queue), the slower of the two: the tests need requests that
outlast their deadlines. A slow request is 64 texts of 64 characters (the model's longest input)
at beam 16: about 1.4 s on the 2-core machine, where 64 short dates took 0.4 s and a faster CI
machine ended them before their deadlines. The module measures it (`slow_seconds`) and sets the
deadlines from it; a test whose slow requests end too early fails saying so.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.paths import ROOT
from tests.helpers.server import LONGEST_DATES_INPUT
from tests.helpers.wait import wait_until_async

MODEL = "dates-additive"
BACKEND = "torch"  # see the module's docstring
QUEUE = 8
DATES = [f"{d}. September 19{d + 50}" for d in range(1, 29)]
SLOW_TEXT = LONGEST_DATES_INPUT


class Server:
    """`attnserve serve` in a subprocess on port 0; its gRPC and REST addresses and metrics port.

    Its output is read all along by a thread (`log`): a pipe nobody reads fills, and the server
    then blocks in its next log call."""

    def __init__(self, repository: Path) -> None:
        cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository), "--host", "127.0.0.1",
               "--grpc-port", "0", "--metrics-port", "0", "--models", MODEL,
               "--model-control-mode", "explicit"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        self.log: list[str] = []
        for line in self.proc.stdout:
            self.log.append(line)
            ready = re.search(r"serving gRPC on port (\d+), metrics on port (\d+), HTTP on port (\d+)", line)
            if ready:
                self.address, self.metrics_port = f"127.0.0.1:{ready.group(1)}", int(ready.group(2))
                self.http_address = f"127.0.0.1:{ready.group(3)}"
                threading.Thread(target=self.log.extend, args=(self.proc.stdout,), daemon=True).start()
                return
        raise RuntimeError(f"the server exited with {self.proc.wait()}:\n{''.join(self.log)}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def srv(reference_repository: Path) -> Iterator[Server]:
    server = Server(reference_repository)
    yield server
    server.stop()
    # every refusal, expiry and cancellation above is an answer, not a server error
    errors = [line for line in server.log if "Traceback" in line or "Exception in callback" in line]
    assert not errors, "".join(server.log[-200:])


def text_request(n: int, **params) -> pb.ModelInferRequest:
    texts = np.array([DATES[i % len(DATES)].encode() for i in range(n)], dtype=np.object_)
    return codec.infer_request(MODEL, {"text": texts}, ["text"], {"backend": BACKEND, **params})


def slow_request(beam: int = 16, texts: int = 64) -> pb.ModelInferRequest:
    """`texts` of the longest input at `beam`: about 1.4 s at 64 texts and beam 16 (2-core machine)."""
    batch = np.array([SLOW_TEXT.encode()] * texts, dtype=np.object_)
    return codec.infer_request(MODEL, {"text": batch}, ["text"], {"backend": BACKEND, "beam_size": beam})


def slow_requests() -> list[pb.ModelInferRequest]:
    """Three slow requests (beams of 14 to 16: requests of different beam sizes never share a
    batch, so they run one after the other)."""
    return [slow_request(beam) for beam in (16, 15, 14)]


@pytest.fixture(scope="module")
def slow_seconds(srv: Server) -> float:
    """How long one slow request takes on this machine, the model idle (the faster of two)."""
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            stub.ModelInfer(slow_request(), timeout=120)
            times.append(time.perf_counter() - start)
    return min(times)


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
    """50 slow requests (beams of 14 to 16) at once; the status code of each."""

    async def one(i: int) -> str:
        request = slow_request(16 - i % 3)
        for key, value in kw.get("params", {}).items():
            request.parameters[key].int64_param = value
        try:
            await stub.ModelInfer(request, timeout=kw.get("deadline", 120))
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    return await asyncio.gather(*(one(i) for i in range(50)))


async def on_idle_model(address: str, work) -> tuple[object, bool]:
    """Run `work(stub)` with the model idle; as `occupied`, with nothing else computing."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await work(pb_grpc.GRPCInferenceServiceStub(channel)), True


@pytest.mark.parametrize(
    ("expiry", "occupy"),
    [
        # Triton's `timeout` parameter: 10 ms from the server's receipt of the request (it bounds the
        # wait in the queue), while the model computes other requests
        ({"params": {"timeout": 10_000}}, True),
        # the client's gRPC deadline, while the model computes other requests
        ({"deadline": None}, True),
        # the throughput criteria's overload case on an idle model: the first request starts at once
        # and its deadline passes while it computes (it stops at its next decoder step); the others
        # pass theirs in the queue
        ({"deadline": None}, False),
    ],
    ids=["timeout-parameter-10ms", "grpc-deadline-queued", "grpc-deadline-computing"],
)
def test_expired_requests_are_dropped_before_compute_and_counted(srv, slow_seconds, expiry, occupy):
    """50 slow requests at once, all expiring: every one answered DEADLINE_EXCEEDED, counted so in
    ModelStatistics and attnserve_requests_total, and none computed to its end.

    The gRPC deadline is 0.3 s (a third of a slow request where that is shorter), not 10 ms: a call
    whose deadline passes before the server has read its message cannot be counted under its model
    (the name is in the unread message; such calls are counted with empty model labels,
    serving/grpc/intake.py), and the server takes about a millisecond of its loop to take in each
    call. Measured here before the intake counting: of 50 such calls with a 10 ms deadline the
    client saw 50 DEADLINE_EXCEEDED, the model's statistics counted 6.
    """
    if "deadline" in expiry:
        expiry = {"deadline": min(0.3, slow_seconds / 3)}
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        load(stub, max_queue_size=256)
        before, codes_before = model_stats(stub), requests_by_code(srv)
        around = occupied if occupy else on_idle_model
        codes, busy = asyncio.run(around(srv.address, lambda aio_stub: fifty(aio_stub, **expiry)))
        assert busy, f"the slow requests ({slow_seconds:.2f} s each) ended before the 50 expired: no proof"
        after, codes_after = model_stats(stub), requests_by_code(srv)
    slow = 3 if occupy else 0
    assert codes == ["DEADLINE_EXCEEDED"] * 50, Counter(codes)
    unread = unattributed(srv)
    assert codes_after - codes_before == Counter({"OK": slow, "DEADLINE_EXCEEDED": 50}) - Counter(), unread
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 50
    # only the slow requests were computed: an execution of 64 items each (a batch stopped
    # between two decoder steps is no execution)
    assert after.execution_count - before.execution_count == slow
    assert after.inference_count - before.inference_count == slow * 64


def test_a_burst_of_10ms_deadlines_is_counted_whole(srv, slow_seconds):
    """The throughput criteria's overload case as sent (benchmarks/throughput_report.py): 50 slow requests at once
    with a 10 ms deadline. The server takes in a call in 0.15-0.4 ms of its loop, so the later calls' deadlines pass
    inside gRPC before their message is read: gRPC then cancels the handler during the read. Every call is still
    counted as DEADLINE_EXCEEDED: under the model when its message was read in time, with empty model labels when
    not (serving/grpc/intake.py). Measured before the read's cancellation was counted: the model 7-21 of 50, nothing
    else."""
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        load(stub, max_queue_size=256)
        before, model_before, unread_before = model_stats(stub), requests_by_code(srv), unattributed(srv)
        codes, _ = asyncio.run(on_idle_model(srv.address, lambda aio_stub: fifty(aio_stub, deadline=0.01)))
        assert codes == ["DEADLINE_EXCEEDED"] * 50, Counter(codes)
        # the server learns of the ends asynchronously, and stops the computing one at its next step
        counted = Counter()
        end_by = time.monotonic() + max(10.0, 3 * slow_seconds)
        while time.monotonic() < end_by:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
            model, unread = requests_by_code(srv) - model_before, unattributed(srv) - unread_before
            counted = model + unread
            if counted.total() >= 50:
                break
            time.sleep(0.1)
        after = model_stats(stub)
    assert counted == Counter({"DEADLINE_EXCEEDED": 50}), (model, unread)
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == model["DEADLINE_EXCEEDED"]
    assert after.execution_count == before.execution_count  # none computed to its end


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
        alone = stub.ModelInfer(slow_request(8, texts=8), timeout=120)
        expected = codec.response_tensors(alone)["text"]
        before, codes_before = model_stats(stub), requests_by_code(srv)

        async def flood() -> tuple[list[str], list[int]]:
            async with grpc.aio.insecure_channel(srv.address) as aio_channel:
                stub = pb_grpc.GRPCInferenceServiceStub(aio_channel)
                health = health_pb2_grpc.HealthStub(aio_channel)

                async def one() -> str:
                    try:
                        response = await stub.ModelInfer(slow_request(8, texts=8), timeout=300)
                    except grpc.aio.AioRpcError as exc:
                        assert f"its max_queue_size ({QUEUE})" in exc.details(), exc.details()
                        return exc.code().name
                    assert np.array_equal(codec.response_tensors(response)["text"], expected)
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

                def seen() -> bool:  # the server has it (one series per backend)
                    assert not call.done(), "the slow request ended before it was seen in flight"
                    return sum(inflight()) == 1

                await wait_until_async(seen, "the slow request in flight", timeout=30, interval=0.02)
                await asyncio.sleep(0.1)  # computing: about 1.4 s of work
                call.cancel()

        asyncio.run(leave_while_computing())
        answer = stub.ModelInfer(text_request(1), timeout=60)  # served after the abandoned batch
        assert codec.response_tensors(answer)["text"].tolist() == [b"1951-09-01"]
        after, codes_after = model_stats(stub), requests_by_code(srv)
    assert codes_after - codes_before == Counter({"CANCELLED": 1, "OK": 1}), "the slow request ended first"
    # the abandoned batch stopped between two decoder steps: it is no execution, its items no inferences
    assert (after.execution_count - before.execution_count, after.inference_count - before.inference_count) == (1, 1)


def rest_infer(address: str, texts: int, **params) -> tuple[int, dict]:
    """(status, JSON body) of one KServe V2 REST request of `texts` dates to MODEL."""
    doc: dict = {"inputs": [{"name": "text", "shape": [texts], "datatype": "BYTES",
                             "data": [DATES[i % len(DATES)] for i in range(texts)]}]}  # fmt: skip
    doc["parameters"] = {"backend": BACKEND, **params}
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        conn.request("POST", f"/v2/models/{MODEL}/infer", json.dumps(doc), {"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_rest_honours_the_timeout_parameter_and_the_queue_bound(srv):
    """The same admission over REST: Triton's `timeout` parameter expires a queued request (504),
    a full queue refuses at once (429, naming the limit), each counted under its gRPC code."""
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        load(stub, max_queue_size=QUEUE)
        before, codes_before = model_stats(stub), requests_by_code(srv)

        async def rest_while_busy(_stub) -> tuple[tuple[int, dict], list[tuple[int, dict]]]:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max_workers=24) as pool:  # every REST request in flight at once
                timed = await loop.run_in_executor(pool, lambda: rest_infer(srv.http_address, 1, timeout=10_000))
                flood = [loop.run_in_executor(pool, rest_infer, srv.http_address, 1) for _ in range(24)]
                return timed, list(await asyncio.gather(*flood))

        # the accepted REST requests wait for the slow ones, so `occupied` cannot see the model busy
        # when they end; the 504 (queued for 10 ms) and the 429s (8 queued) show it was
        (timed, flood), _ = asyncio.run(occupied(srv.address, rest_while_busy))
        after, codes_after = model_stats(stub), requests_by_code(srv)
        load(stub, max_queue_size=256)
    assert timed[0] == 504 and "deadline passed while it waited in the queue" in timed[1]["error"], timed
    statuses = Counter(status for status, _ in flood)
    assert set(statuses) == {200, 429} and statuses[429] >= 24 - QUEUE, statuses
    for status, doc in flood:
        if status == 429:
            assert f"its max_queue_size ({QUEUE})" in doc["error"], doc
        else:
            assert doc["outputs"][0]["data"] == ["1951-09-01"], doc
    expected = Counter({"OK": 3 + statuses[200], "DEADLINE_EXCEEDED": 1, "RESOURCE_EXHAUSTED": statuses[429]})
    assert codes_after - codes_before == expected
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1 + statuses[429]


def test_a_rest_client_that_leaves_has_its_queued_request_dropped(srv):
    """A REST client that closes its connection while its request waits is gone, as a gRPC client that
    cancels: the request is dropped unrun and counted CANCELLED."""
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        before, codes_before = model_stats(stub), requests_by_code(srv)

        async def leave_while_queued(_stub) -> None:
            doc = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [DATES[0]]}],
                   "parameters": {"backend": BACKEND}}  # fmt: skip
            body = json.dumps(doc).encode()
            head = f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
            host, port = srv.http_address.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(head.encode() + body)
            await writer.drain()
            await asyncio.sleep(0.2)  # queued behind the slow requests
            writer.close()
            await writer.wait_closed()
            assert await reader.read() == b""  # no answer came

        _, busy = asyncio.run(occupied(srv.address, leave_while_queued))
        assert busy, "the slow requests ended first; the test proves nothing"
        answer = stub.ModelInfer(text_request(1), timeout=60)  # the model serves on
        assert codec.response_tensors(answer)["text"].tolist() == [b"1951-09-01"]
        after, codes_after = model_stats(stub), requests_by_code(srv)
    assert codes_after - codes_before == Counter({"OK": 4, "CANCELLED": 1})
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.execution_count - before.execution_count == 4  # the three slow requests and the last one


def unattributed(srv: Server) -> Counter:
    """attnserve_requests_total of calls whose model is unknown (model label ""), by code."""
    samples = metric_samples(srv, "attnserve_requests_total")
    return Counter({s.labels["code"]: int(s.value) for s in samples if s.labels["model"] == ""})


@pytest.mark.parametrize("end", ["deadline", "cancel", "no-message"])
def test_a_call_that_ends_before_its_request_is_read_is_counted(srv, end):
    """A ModelInfer call whose message never arrives (its client sent the headers only) and whose
    deadline passes, or which its client cancels, is counted with empty model labels: grpc.aio
    would drop it before any handler (serving/grpc/intake.py). A call that ends without a message
    is refused, and is no abandoned call."""

    async def headers_only() -> str:
        async with grpc.aio.insecure_channel(srv.address) as channel:
            method = channel.stream_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            call = method(timeout=0.3 if end == "deadline" else 30)  # messages written by hand: none
            await call.wait_for_connection()  # the call's headers are sent
            if end == "cancel":
                await asyncio.sleep(0.3)
                call.cancel()
            elif end == "no-message":
                await call.done_writing()
            try:
                await call
            except asyncio.CancelledError:
                return "CANCELLED"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK"

    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        before = unattributed(srv)
        code = asyncio.run(headers_only())
        # the server learns of the end asynchronously (serving/grpc/intake.py): wait for it, bounded
        end_by = time.monotonic() + (0.5 if end == "no-message" else 10)
        while unattributed(srv) == before and time.monotonic() < end_by:
            time.sleep(0.05)
        stub.ServerLive(pb.ServerLiveRequest(), timeout=10)  # the loop has recorded the call by now
        after = unattributed(srv)
    expected = {"deadline": "DEADLINE_EXCEEDED", "cancel": "CANCELLED", "no-message": "INVALID_ARGUMENT"}[end]
    assert code == expected
    assert after - before == (Counter() if end == "no-message" else Counter({expected: 1}))
