"""Property-based fuzzing of ModelInfer request bodies over a real channel.

Random bytes, mutated valid requests and generated requests with arbitrary names, datatypes,
shapes and contents: every call ends within its deadline with OK or a client-error status
(never UNKNOWN, INTERNAL or DEADLINE_EXCEEDED), and the server stays live.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from tests.helpers.server import RunningServer, start_server

MODELS = ["dates-additive", "sort-pointer", "debian-han"]
CLIENT_ERRORS = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}
DEADLINE = 20.0  # seconds; a hang or a pathological decode shows as DEADLINE_EXCEEDED
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_bodies() -> list[bytes]:
    texts = np.array([b"Freitag, 2. September 1983", b"14 de mar\xc3\xa7 2003"], dtype=np.object_)
    doc = np.array([b"A real-time strategy game. Build an empire and fight wars."], dtype=np.object_)
    bodies = []
    for model, name, array, output in (
        ("dates-additive", "text", texts, "text"),
        ("debian-han", "text", doc, "label"),
        ("sort-pointer", "values", np.array([[42, 7, 93, 15, 61]], dtype="<i8"), "order"),
    ):
        req = pb.ModelInferRequest(model_name=model, id="fuzz")
        datatype = "BYTES" if array.dtype == object else "INT64"
        req.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        req.raw_input_contents.append(serialize_bytes(array) if datatype == "BYTES" else array.tobytes())
        req.outputs.add(name=output)
        if model == "dates-additive":
            req.parameters["beam_size"].int64_param = 2
        bodies.append(req.SerializeToString())
    return bodies


VALID = valid_bodies()


@pytest.fixture(scope="module")
def server(reference_repository: Path) -> Iterator[RunningServer]:
    srv = start_server(reference_repository, models=MODELS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def send(channel: grpc.Channel):
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out

    def send(body: bytes) -> str:
        try:
            call(body, timeout=DEADLINE)
            return "OK"
        except grpc.RpcError as exc:
            assert exc.code().name in CLIENT_ERRORS, (exc.code(), exc.details(), body[:200])
            assert len(exc.details()) < 1000 and "Traceback" not in exc.details()
            return exc.code().name

    return send


@pytest.fixture(scope="module", autouse=True)
def stays_live(channel: grpc.Channel) -> Iterator[None]:
    yield
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    ok = stub.ModelInfer(pb.ModelInferRequest.FromString(VALID[0]), timeout=30)
    assert ok.raw_output_contents[0].startswith(b"\x0a\x00\x00\x001983-09-02")


def test_the_valid_bodies_are_valid(send):
    assert [send(b) for b in VALID] == ["OK", "OK", "OK"]


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(send, body: bytes):
    send(body)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if kind == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and body:
            body[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x22]))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del body[at:]
        elif kind == "duplicate":
            body += body[at : at + draw(st.integers(1, 64))]
    return bytes(body)


@FUZZ
@given(mutated())
def test_mutated_valid_requests(send, body: bytes):
    send(body)


DATATYPES = ["BYTES", "INT64", "INT32", "FP32", "FP16", "BOOL", "UINT8", "FP64", "", "BF16", "bytes"]
DIMS = st.one_of(st.integers(-2, 70), st.sampled_from([2**31, 2**62, 2**63 - 1, -(2**63), 8_700_000]))


@st.composite
def generated(draw: st.DrawFn) -> bytes:
    req = pb.ModelInferRequest(model_name=draw(st.sampled_from([*MODELS, "", "nope", "dates-dot", "../x"])))
    req.model_version = draw(st.sampled_from(["", "1", "2", "-1", "99999999999999999999", "x"]))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = req.inputs.add(
            name=draw(st.sampled_from(["text", "values", "x", ""])),
            datatype=draw(st.sampled_from(DATATYPES)),
            shape=draw(st.lists(DIMS, max_size=4)),
        )
        if raw:
            req.raw_input_contents.append(draw(st.binary(max_size=256)))
        else:
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=80), max_size=5)))
            tensor.contents.int64_contents.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5)))
    for _ in range(draw(st.integers(0, 2))):
        req.outputs.add(name=draw(st.sampled_from(["text", "attention", "order", "label", "nope"])))
    for key in draw(st.lists(st.sampled_from(["beam_size", "max_length", "backend", "priority", "zzz"]), max_size=3)):
        value = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=10), st.booleans()))
        if isinstance(value, bool):
            req.parameters[key].bool_param = value
        elif isinstance(value, int):
            req.parameters[key].int64_param = value
        else:
            req.parameters[key].string_param = value
    return req.SerializeToString()


@FUZZ
@given(generated())
def test_generated_requests(send, body: bytes):
    send(body)
