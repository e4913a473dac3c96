"""A large ModelInferRequest body split at its top level equals protobuf's parse of it."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.gen.inference import grpc_service_pb2 as pb
from serving.grpc.infer_body import SplitRequest, parse_infer_request


def protobuf(body: bytes) -> pb.ModelInferRequest | None:
    try:
        return pb.ModelInferRequest.FromString(body)
    except DecodeError:
        return None


def split(body: bytes) -> pb.ModelInferRequest | None:
    """The split parse (every body counts as large), put back together for comparison."""
    try:
        result = parse_infer_request(body, split_bytes=0)
    except DecodeError:
        return None
    if isinstance(result, SplitRequest):
        assert not result.message.raw_input_contents
        result.message.raw_input_contents.extend(bytes(r) for r in result.raw)
        return result.message
    return result


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    req = pb.ModelInferRequest(model_name=draw(st.text(max_size=8)), id=draw(st.text(max_size=4)))
    for _ in range(draw(st.integers(0, 3))):
        req.inputs.add(name=draw(st.text(max_size=5)), datatype="BYTES", shape=draw(st.lists(st.integers(-5, 2**40))))
        req.raw_input_contents.append(draw(st.binary(max_size=64)))
    for key in draw(st.lists(st.text(max_size=4), max_size=3)):
        req.parameters[key].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    for _ in range(draw(st.integers(0, 2))):
        req.outputs.add(name=draw(st.text(max_size=5)))
    body = bytearray(req.SerializeToString())
    for _ in range(draw(st.integers(0, 4))):  # mutations: the two parses must still agree
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert"]))
        if kind == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del body[at:]
        else:
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(body)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_split_parse_equals_protobufs(body: bytes):
    assert split(body) == protobuf(body)


def test_raw_tensors_stay_views_of_the_body_and_small_bodies_parse_as_usual():
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(b"x" * 2_000_000)
    body = req.SerializeToString()
    result = parse_infer_request(body)
    assert isinstance(result, SplitRequest) and result.message.model_name == "m"
    assert result.raw[0].obj is body and len(result.raw[0]) == 2_000_000
    small = pb.ModelInferRequest(model_name="m").SerializeToString()
    assert isinstance(parse_infer_request(small), pb.ModelInferRequest)


def test_many_top_level_fields_are_left_to_protobuf():
    body = pb.ModelInferRequest(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="o")] * 5000)
    result = parse_infer_request(body.SerializeToString(), split_bytes=0)
    assert isinstance(result, pb.ModelInferRequest) and len(result.outputs) == 5000
    with pytest.raises(DecodeError):
        parse_infer_request(b"\x3a\xff\xff\xff\xff\x0f", split_bytes=0)  # field 7 claims 4 GB
