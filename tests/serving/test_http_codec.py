"""The REST codec alone (no server): JSON tensors of every datatype, the binary-data extension, and
the HTTP status table; fast."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.errors import ErrorCode, InvalidInput, Unsupported
from runtime.tensors import DATATYPES, serialize_bytes, tensor_from_raw, tensor_to_raw
from serving.http.codec import InferRequest, encode_response, parse_request, tensor_from_json
from serving.http.errors import HTTP_STATUS


def body(*inputs: dict, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def test_every_error_code_has_an_http_status():
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert HTTP_STATUS[ErrorCode.INVALID_ARGUMENT] == 400 and HTTP_STATUS[ErrorCode.NOT_FOUND] == 404
    assert HTTP_STATUS[ErrorCode.UNAVAILABLE] == 503 and HTTP_STATUS[ErrorCode.INTERNAL] == 500


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("BOOL", [[True, False]], np.array([[True, False]])),
        ("INT8", [[-128, 127]], np.array([[-128, 127]], dtype=np.int8)),
        ("UINT64", [[0, 2**64 - 1]], np.array([[0, 2**64 - 1]], dtype=np.uint64)),
        ("INT64", [[1, 2]], np.array([[1, 2]], dtype=np.int64)),
        ("FP16", [[0.5, 2]], np.array([[0.5, 2]], dtype=np.float16)),
        ("FP32", [[1, 2.5]], np.array([[1, 2.5]], dtype=np.float32)),
        ("FP64", [1e300, -0.0], np.array([[1e300, -0.0]])),  # flat data fills the shape row-major
        ("BYTES", [["ä", ""]], np.array([["ä".encode(), b""]], dtype=np.object_)),
    ],
)
def test_json_data_of_every_datatype(datatype, data, expected):
    array = tensor_from_json("x", datatype, (1, 2), data)
    assert array.dtype == expected.dtype and array.shape == (1, 2)
    assert array.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT8", [128], "element 0 is out of the range of INT8 [-128, 127]"),
        ("UINT8", [-1], "element 0 is out of the range of UINT8"),
        ("INT32", [1.5], "INT32 data must be integers; element 0 is a number with a fraction"),
        ("INT64", [True], "INT64 data must be integers; element 0 is a boolean"),
        ("INT64", [2**70], "element 0 is out of the range of INT64"),
        ("BOOL", [1], "BOOL data must be true or false; element 0 is an integer"),
        ("FP32", [None], "FP32 data must be numbers; element 0 is null"),
        ("FP32", [{"a": 1}], "FP32 data must be numbers; element 0 is an object"),
        ("BYTES", [b"x".decode() + "\ud800"], "'x'[0] is not valid Unicode"),
        ("INT64", [1, 2], "shape [1] needs 1 values, got 2"),
        ("INT64", [[1], [2, 3]], "not rectangular"),
        ("FP8", [1], "unknown datatype 'FP8'"),
    ],
)
def test_json_data_that_does_not_fit_is_refused_with_the_reason(datatype, data, message):
    with pytest.raises(InvalidInput) as err:
        tensor_from_json("x", datatype, (1,), data)
    assert message in err.value.message


def test_empty_tensors_and_a_lone_value():
    assert tensor_from_json("x", "INT64", (0, 3), []).shape == (0, 3)
    assert tensor_from_json("x", "FP32", (), 2.5).tolist() == 2.5


def test_binary_inputs_follow_the_json_part_in_order():
    values = np.array([[3, 1, 2]], dtype=np.int64)
    texts = np.array([b"a", "é".encode()], dtype=np.object_)
    raw_values, raw_texts = values.tobytes(), serialize_bytes(texts)
    header = body(
        {"name": "values", "shape": [1, 3], "datatype": "INT64", "parameters": {"binary_data_size": len(raw_values)}},
        {"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw_texts)}},
        {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]},
        outputs=[{"name": "order", "parameters": {"binary_data": True}}, {"name": "attention"}],
        parameters={"binary_data_output": False, "beam_size": 4, "backend": "torch"},
        id="abc",
    )
    request = parse_request(header + raw_values + raw_texts, len(header))
    assert request.inputs["values"].tolist() == values.tolist()
    assert request.inputs["text"].tolist() == texts.tolist() and request.inputs["flag"].tolist() == [True]
    assert request.params == {"beam_size": 4, "backend": "torch"}  # the extension's own parameter removed
    assert request.outputs == ["order", "attention"] and request.id == "abc"
    assert request.is_binary("order") and not request.is_binary("attention") and not request.is_binary("other")


@pytest.mark.parametrize(
    ("claimed", "sent", "with_header", "message"),
    [
        (8, 8, False, "not valid JSON"),  # binary data without the header that says where it starts
        (7, 7, True, "INT64 [1] needs 8 bytes, got 7"),
        (10, 9, True, "binary_data_size 10 runs past the body's 9 bytes"),
        (8, 9, True, "1 bytes of binary data after the inputs claimed 8"),
    ],
)
def test_binary_sizes_must_add_up(claimed, sent, with_header, message):
    header = body({"name": "v", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": claimed}})
    with pytest.raises(InvalidInput) as err:
        parse_request(header + b"\x00" * sent, len(header) if with_header else None)
    assert message in err.value.message


def test_extensions_not_offered_and_structural_limits():
    with pytest.raises(Unsupported, match="classification"):
        parse_request(body({"name": "v", "shape": [1], "datatype": "INT64", "data": [1]},
                           outputs=[{"name": "o", "parameters": {"classification": 3}}]), None)  # fmt: skip
    with pytest.raises(InvalidInput, match="'inputs' has 65 entries; at most 64"):
        parse_request(body(*[{"name": f"v{i}", "shape": [1], "datatype": "INT64"} for i in range(65)]), None)
    with pytest.raises(InvalidInput, match="appears twice"):
        parse_request(body(*[{"name": "v", "shape": [1], "datatype": "INT64", "data": [1]}] * 2), None)
    with pytest.raises(InvalidInput, match="not valid JSON"):  # nesting is bounded by the parser
        parse_request(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None)
    with pytest.raises(InvalidInput, match="parameter 'p' must be a boolean, a number or a string"):
        parse_request(body({"name": "v", "shape": [1], "datatype": "INT64", "data": [1]}, parameters={"p": [1]}), None)


def test_responses_in_json_and_in_binary():
    outputs = {
        "text": np.array([b"2021-03-03"], dtype=np.object_),
        "attention": np.array([[[0.25, math.nan, math.inf]]], dtype=np.float32),
    }
    request = InferRequest(id="r", inputs={}, params={}, outputs=[], binary={"attention": True})
    chunks, split = encode_response(request, "m", "1", "onnxruntime", outputs)
    payload = b"".join(chunks)
    doc = json.loads(payload[:split])
    assert doc["id"] == "r" and doc["parameters"] == {"backend": "onnxruntime"}
    assert doc["outputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["2021-03-03"]}
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 12}
    np.testing.assert_array_equal(np.frombuffer(payload[split:], "<f4"), outputs["attention"].reshape(-1))
    chunks, split = encode_response(InferRequest("", {}, {}, []), "m", "1", "torch", outputs)
    doc = json.loads(b"".join(chunks))  # NaN and Infinity as Triton writes them
    assert split is None and "id" not in doc and doc["outputs"][1]["data"][0] == 0.25
    assert math.isnan(doc["outputs"][1]["data"][1]) and doc["outputs"][1]["data"][2] == math.inf


@pytest.mark.parametrize("dtype", [d for d in DATATYPES if d != "bytes"])
def test_raw_tensors_round_trip_every_datatype(dtype):
    array = (np.arange(6) % 2 == 0) if dtype == "bool" else np.arange(6).astype(dtype)
    array = array.reshape(2, 3)
    datatype, raw = tensor_to_raw(array)
    assert datatype == DATATYPES[dtype]
    back = tensor_from_raw("x", datatype, (2, 3), memoryview(b"\x00" + raw)[1:])  # unaligned, as in a body
    assert back.dtype == array.dtype and back.tolist() == array.tolist()
