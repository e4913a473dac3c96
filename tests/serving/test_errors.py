"""Bad input gets a precise status and message over a real channel; the next request still works."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest

from protocol.gen.inference import grpc_service_pb2 as pb


def bytes_raw(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def text_request(model: str, items: list[bytes], **kw) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, **kw)
    req.inputs.add(name="text", datatype="BYTES", shape=[len(items)])
    req.raw_input_contents.append(bytes_raw(items))
    return req


GOOD = text_request("dates-additive", [b"Freitag, 2. September 1983"])


def expect(stub, request, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=30)
    assert err.value.code() == code, err.value.details()
    for f in fragments:
        assert f in err.value.details(), err.value.details()
    # the server answers the next request normally
    ok = stub.ModelInfer(GOOD, timeout=30)
    assert ok.raw_output_contents[0].endswith(b"1983-09-02")


def test_unknown_model_and_version(stub):
    expect(stub, text_request("no-such-model", [b"x"]), grpc.StatusCode.NOT_FOUND, "unknown model 'no-such-model'")
    req = text_request("dates-additive", [b"x"], model_version="7")
    expect(stub, req, grpc.StatusCode.NOT_FOUND, "no version '7'")
    expect(stub, text_request("../etc", [b"x"]), grpc.StatusCode.INVALID_ARGUMENT, "invalid model name")
    for version in ("²", "١"):  # digits to str.isdigit(); int() refuses the first and reads the second as 1
        req = text_request("dates-additive", [b"x"], model_version=version)
        expect(stub, req, grpc.StatusCode.NOT_FOUND, f"no version '{version}'")
        assert not stub.ModelReady(pb.ModelReadyRequest(name="dates-additive", version=version)).ready


def test_wrong_dtype_shape_and_missing_input(stub):
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="text", datatype="FP32", shape=[1])
    req.raw_input_contents.append(np.float32(1).tobytes())
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "input 'text' must be BYTES, got FP32")
    req = text_request("dates-additive", [b"a", b"b"])
    req.inputs[0].shape[:] = [1, 2]
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "rank 1")
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="source", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(bytes_raw([b"x"]))
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "missing input(s) ['text']")
    req = text_request("dates-additive", [b"a"])
    req.raw_input_contents[0] = req.raw_input_contents[0] + b"junk"
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "unexpected bytes")


def test_empty_non_utf8_and_too_long_text(stub):
    expect(stub, text_request("dates-additive", [b""]), grpc.StatusCode.INVALID_ARGUMENT, "'text'[0] is empty")
    expect(stub, text_request("dates-additive", [b"\xff\xfe"]), grpc.StatusCode.INVALID_ARGUMENT, "not valid UTF-8")
    long = text_request("dates-additive", [b"x" * 65])
    expect(stub, long, grpc.StatusCode.INVALID_ARGUMENT, "65 characters; this model takes at most 64")
    # a location-based model says why its limit is a hard one
    located = text_request("dates-location", [b"x" * 65])
    expect(stub, located, grpc.StatusCode.INVALID_ARGUMENT, "65 characters; this model takes at most 64: its "
           "location-based attention scores a fixed 64 source positions")  # fmt: skip


def test_unknown_backend_and_bad_parameters(stub):
    req = text_request("dates-additive", [b"2. September 1983"])
    req.parameters["backend"].string_param = "tensorrt"
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "unknown backend 'tensorrt'", "onnxruntime", "torch")
    req = text_request("dates-additive", [b"2. September 1983"])
    req.parameters["beam_size"].int64_param = 99
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "beam_size must be between 1 and 16")
    req = text_request("dates-additive", [b"2. September 1983"])
    req.outputs.add(name="nope")
    expect(stub, req, grpc.StatusCode.INVALID_ARGUMENT, "no output(s) ['nope']")


def test_sort_value_errors(stub):
    def sort_request(values: list[list[int]]) -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name="sort-pointer")
        req.inputs.add(name="values", datatype="INT64", shape=[len(values), len(values[0])])
        req.raw_input_contents.append(np.array(values, dtype="<i8").tobytes())
        return req

    expect(stub, sort_request([[1, 2, 100]]), grpc.StatusCode.INVALID_ARGUMENT, "values must lie in [0, 100)")
    expect(stub, sort_request([[-1, 2, 3]]), grpc.StatusCode.INVALID_ARGUMENT, "values must lie in [0, 100)")
    expect(stub, sort_request([[4, 4, 3]]), grpc.StatusCode.INVALID_ARGUMENT, "repeated values")


def test_typed_contents_are_accepted(stub):
    req = pb.ModelInferRequest(model_name="dates-additive")
    tensor = req.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"Freitag, 2. September 1983")
    response = stub.ModelInfer(req, timeout=30)
    assert response.raw_output_contents[0].endswith(b"1983-09-02")


def test_unimplemented_rpcs(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
