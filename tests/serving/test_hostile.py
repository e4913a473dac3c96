"""Hostile requests are cheap: refused on their headers before their data is decoded, over a real
channel; undecodable bodies answer INVALID_ARGUMENT with a short message and little logging;
every INTERNAL is logged once with the request id its answer carries.

Timings and memory of the same requests are measured by benchmarks/hostile.py.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import random
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protocol.gen.attnserve.v1 import attention_pb2, attention_pb2_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.errors import BackendFailure
from runtime.tensors import serialize_bytes
from serving.grpc.interceptors import ErrorInterceptor
from serving.settings import MAX_MESSAGE_BYTES
from tests.helpers.server import RunningServer, start_server

MODELS = ["dates-additive", "sort-pointer"]
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def server(reference_repository: Path) -> Iterator[RunningServer]:
    srv = start_server(reference_repository, models=MODELS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", -1)]) as channel:
        yield channel


def raw_items(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def text(model: str = "dates-additive", shape: list[int] | None = None, raw: bytes | None = None, **kw):
    def build() -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name=kw.get("name", "text"), datatype=kw.get("datatype", "BYTES"), shape=shape or [1])
        req.raw_input_contents.append(raw if raw is not None else raw_items([b"2. September 1983"]))
        return req

    return build


def values(shape: list[int], raw: bytes) -> Callable[[], pb.ModelInferRequest]:
    def build() -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name="sort-pointer")
        req.inputs.add(name="values", datatype="INT64", shape=shape)
        req.raw_input_contents.append(raw)
        return req

    return build


def typed(count: int, shape: list[int], item: bytes = b"1. Mai 2000") -> Callable[[], pb.ModelInferRequest]:
    def build() -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name="dates-additive")
        tensor = req.inputs.add(name="text", datatype="BYTES", shape=shape)
        tensor.contents.bytes_contents.extend([item] * count)
        return req

    return build


def twice() -> pb.ModelInferRequest:
    req = text()()
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(raw_items([b"x"]))
    return req


def extra_raw() -> pb.ModelInferRequest:
    req = text()()
    req.raw_input_contents.append(b"")
    return req


MILLION = 1_000_000
IA = "INVALID_ARGUMENT"
# (request, code, fragment): each is refused precisely, most on the tensor header alone
BAD_INPUT = [
    (
        text(shape=[8_700_000], raw=b"\x01\x00\x00\x00a" * 8),
        IA,
        "batch 8700000, over max_batch_size 64",
    ),
    (text(shape=[64], raw=raw_items([b"a"])), IA, "64 BYTES elements need at least 256 bytes"),
    (text(shape=[1, MILLION]), IA, "must have rank 1"),
    (text(shape=[0], raw=b""), IA, "is empty"),
    (text(shape=[-3]), IA, "negative dimension"),
    (text(raw=raw_items([b"x" * 100_000])), IA, "'text'[0] has 100000 bytes; this model takes at most 256 per item"),
    (typed(1, [1], b"x" * 300), IA, "'text'[0] has 300 bytes; this model takes at most 256 per item"),
    (
        text(raw=struct.pack("<I", 2**31) + b"abc"),
        IA,
        "element 0 claims 2147483648 bytes, only 3 remain",
    ),
    (text(raw=raw_items([b"a"]) + b"zz"), IA, "2 unexpected bytes after 1 elements"),
    (text(datatype="FP32", raw=b"\0" * 4), IA, "input 'text' must be BYTES, got FP32"),
    (text(datatype="NOPE"), IA, "input 'text' must be BYTES, got NOPE"),
    (text(name="source"), IA, "missing input(s) ['text']"),
    (text(model="no-such-model", shape=[8_700_000]), "NOT_FOUND", "unknown model 'no-such-model'"),
    (text(model="../etc"), IA, "invalid model name"),
    (text(model=""), IA, "invalid model name"),
    (text(model="debian-han"), "UNAVAILABLE", "in the repository but not loaded"),
    (typed(3, [1]), IA, "shape [1] needs 1 values, got 3"),
    (typed(1, [MILLION]), IA, "batch 1000000, over max_batch_size 64"),
    (twice, IA, "input 'text' appears twice"),
    (extra_raw, IA, "1 inputs but 2 raw_input_contents"),
    (values([1, 10**9], b"\0" * 8), IA, "has 1000000000 values per row; this model takes 1 to"),
    (values([2, 3], b"\0" * 8), IA, "INT64 [2, 3] needs 48 bytes, got 8"),
    (values([2**62, 2**62], b"\0" * 8), IA, "over max_batch_size 64"),
    (values([1, 3], b"\0" * 24), IA, "repeated values"),
    (values([1, 3, 1], b"\0" * 24), IA, "must have rank 2"),
]


@pytest.mark.parametrize(("build", "code", "fragment"), BAD_INPUT)
def test_bad_input_table(stub, build, code: str, fragment: str):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(build(), timeout=30)
    assert err.value.code() == getattr(grpc.StatusCode, code), err.value.details()
    assert fragment in err.value.details(), err.value.details()
    assert len(err.value.details()) < 300
    ok = stub.ModelInfer(text(raw=raw_items([b"Freitag, 2. September 1983"]))(), timeout=30)
    assert ok.raw_output_contents[0].endswith(b"1983-09-02")


def test_the_typed_service_checks_the_count_before_building_strings(channel):
    typed_stub = attention_pb2_grpc.AttentionStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        typed_stub.Translate(attention_pb2.TranslateRequest(model="dates-additive", texts=["1"] * MILLION), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch 1000000, over max_batch_size 64" in err.value.details()
    request = attention_pb2.SortRequest(model="sort-pointer")
    for _ in range(100):
        request.values.add(values=[1, 2, 3])
    with pytest.raises(grpc.RpcError) as err:
        typed_stub.Sort(request, timeout=30)
    assert "batch 100, over max_batch_size 64" in err.value.details()


def hostile_body() -> pb.ModelInferRequest:
    """A 50 MB body: 8.7 M two-byte BYTES items in one [8.7 M] tensor."""
    count = 8_700_000
    raw = (struct.pack("<I", 2) + b"ab") * count
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="text", datatype="BYTES", shape=[count])
    req.raw_input_contents.append(raw)
    return req


def test_the_default_message_limit_refuses_the_hostile_body_and_fits_the_largest_valid_request(stub):
    body = hostile_body()
    assert body.ByteSize() > MAX_MESSAGE_BYTES
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(body, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the largest valid debian-han request: 64 documents of 100,000 four-byte characters
    largest = serialize_bytes(np.array(["\U0001f600" * 100_000] * 64, dtype=np.object_))
    assert len(largest) + 1024 < MAX_MESSAGE_BYTES
    req = text(raw=largest, shape=[64])()
    with pytest.raises(grpc.RpcError) as err:  # read and judged by the model, not by the transport
        stub.ModelInfer(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "this model takes at most 256 per item" in err.value.details()


def test_with_a_raised_limit_the_hostile_body_is_refused_on_its_header(reference_repository: Path):
    srv = start_server(reference_repository, models=["dates-additive"], grpc={"max_message_bytes": 64 * 2**20})
    try:
        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(srv.address, options=options) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(hostile_body(), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "batch 8700000, over max_batch_size 64" in err.value.details()
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                == health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        srv.stop()


def garbage(rng: random.Random) -> bytes:
    while True:
        body = rng.randbytes(rng.randint(1, 200))
        try:
            pb.ModelInferRequest.FromString(body)
        except DecodeError:
            return body


def test_undecodable_bodies_answer_invalid_argument_and_log_little(channel, stub, caplog):
    rng = random.Random(11)
    bodies = [garbage(rng) for _ in range(2000)]
    call = channel.unary_unary(INFER)  # bytes in, bytes out: no client-side serialization
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        codes = {}
        for body in bodies:
            try:
                call(body, timeout=10)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.RpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                details = exc.details()
                assert details.startswith("the request body (") and "ModelInferRequest" in details, details
                assert "Unexpected" not in details and "Error" not in details and "<class" not in details
    assert codes == {"INVALID_ARGUMENT": 2000}
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert 1 <= len(lines) <= 10, [r.getMessage() for r in lines]
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live


# --- INTERNAL answers: logged once, with the request id the answer carries --------------------


class Failing:
    """A real grpc.aio server with the ErrorInterceptor and methods that fail unexpectedly."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> int:
        async def crash(request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
            raise KeyError("a bug")

        async def backend(request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
            raise BackendFailure("decoder_step: ONNX Runtime failed: boom")

        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ServerLiveResponse.SerializeToString,
            )
            for name, fn in (("Crash", crash), ("Backend", backend))
        }  # fmt: skip
        self.server = aio.server(interceptors=[ErrorInterceptor()])
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Failing", handlers)])
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.parametrize(("method", "fragment"), [("Crash", "internal error in /test.Failing/Crash"),
                                                  ("Backend", "decoder_step: ONNX Runtime failed: boom")])  # fmt: skip
def test_every_internal_is_logged_once_with_its_request_id(caplog, method: str, fragment: str):
    failing = Failing()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{failing.port}") as channel:
            call = channel.unary_unary(
                f"/test.Failing/{method}", request_serializer=pb.ModelInferRequest.SerializeToString
            )
            caplog.clear()
            with (
                caplog.at_level(logging.ERROR, logger="serving.grpc.interceptors"),
                pytest.raises(grpc.RpcError) as err,
            ):
                call(pb.ModelInferRequest(model_name="m", id="client-7"), timeout=10)
    finally:
        failing.stop()
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details()
    assert fragment in details and "request id " in details, details
    request_id = details.split("request id ")[1].split(")")[0].split(";")[0]
    records = [r for r in caplog.records if r.name == "serving.grpc.interceptors"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert request_id in records[0].getMessage() and "client id 'client-7'" in records[0].getMessage()
    assert records[0].exc_info is not None  # the traceback


# --- the same checks over KServe V2 REST (binary data: no JSON to parse) ----------------------


def rest_infer(server: RunningServer, count: int, item: bytes) -> tuple[int, dict]:
    raw = (struct.pack("<I", len(item)) + item) * count
    doc = {"inputs": [{"name": "text", "shape": [count], "datatype": "BYTES",
                       "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    head = json.dumps(doc).encode()
    host, port = server.http_address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
        conn.request("POST", "/v2/models/dates-additive/infer", body=head + raw, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_rest_checks_the_model_on_headers_before_decoding(server: RunningServer):
    status, doc = rest_infer(server, 5_000_000, b"ab")  # 30 MB of two-byte items, under the body limit
    assert (status, doc["error"]) == (400, "input 'text' has batch 5000000, over max_batch_size 64")
    status, doc = rest_infer(server, 1, b"x" * 1_000_000)
    assert (status, doc["error"]) == (400, "input 'text'[0] has 1000000 bytes; this model takes at most 256 per item")
    status, doc = rest_infer(server, 1, b"2. September 1983")
    assert status == 200, doc


def test_undecodable_bodies_to_streaming_methods_answer_invalid_argument(channel, stub):
    """health Watch (a unary-stream coroutine), reflection and ModelStreamInfer (bidirectional)."""
    body = b"\xff\xff\xff\xff"  # an unterminated varint: no message parses it
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
    with pytest.raises(grpc.RpcError) as info:
        list(watch(body, timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert "HealthCheckRequest" in info.value.details()
    for method, message in (
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "ServerReflectionRequest"),
        ("/inference.GRPCInferenceService/ModelStreamInfer", "ModelInferRequest"),
    ):
        call = channel.stream_stream(method)
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter([body]), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, info.value)
        assert message in info.value.details()
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
