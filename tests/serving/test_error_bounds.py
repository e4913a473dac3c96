"""A client's own strings come back cut in error messages, over a real server and both transports:
a 10 KB parameter key, model name, version, tensor name, datatype, output or backend name is answered with
its precise status and a message under 1 KB. (Unbounded, the gRPC message travels in a trailer over
gRPC's 8 KB metadata limit, and the client sees RESOURCE_EXHAUSTED instead.)"""

from __future__ import annotations

import http.client
import json
import struct

import grpc
import pytest

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc

HUGE = 10 * 1024  # characters of the client's string
TEXT = b"Freitag, 2. September 1983"


def grpc_request(model: str = "dates-additive", **kw) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=kw.pop("version", ""))
    req.inputs.add(name=kw.pop("input", "text"), datatype=kw.pop("datatype", "BYTES"), shape=[1])
    req.raw_input_contents.append(struct.pack("<I", len(TEXT)) + TEXT)
    if "extra_input" in kw:
        req.inputs.add(name=kw.pop("extra_input"), datatype="BYTES", shape=[1])
        req.raw_input_contents.append(struct.pack("<I", len(TEXT)) + TEXT)
    if "output" in kw:
        req.outputs.add(name=kw.pop("output"))
    for key in kw.pop("params", ()):
        req.parameters[key].int64_param = 1
    if "backend" in kw:
        req.parameters["backend"].string_param = kw.pop("backend")
    assert not kw
    return req


GRPC_CASES = {
    "parameter key": (grpc_request(params=["k" * HUGE]), grpc.StatusCode.INVALID_ARGUMENT, "unknown parameter 'kkk"),
    "model name": (grpc_request("m" * HUGE), grpc.StatusCode.INVALID_ARGUMENT, "invalid model name 'mmm"),
    "version": (grpc_request(version="9" * HUGE), grpc.StatusCode.NOT_FOUND, "has no version '999"),
    "input name": (grpc_request(extra_input="t" * HUGE), grpc.StatusCode.INVALID_ARGUMENT, "unexpected input(s)"),
    "datatype": (grpc_request(datatype="D" * HUGE), grpc.StatusCode.INVALID_ARGUMENT, "must be BYTES, got DDD"),
    "output name": (grpc_request(output="o" * HUGE), grpc.StatusCode.INVALID_ARGUMENT, "has no output(s) ['ooo"),
    "backend": (grpc_request(backend="b" * HUGE), grpc.StatusCode.INVALID_ARGUMENT, "unknown backend 'bbb"),
}


@pytest.fixture(scope="module")
def infer(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_answers_a_10kb_client_string_with_its_status_and_a_short_message(infer, case):
    request, code, fragment = GRPC_CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        infer(request, timeout=30)
    details = err.value.details()
    assert err.value.code() == code, details[:200]
    assert len(details.encode()) < 1024 and fragment in details and "more characters)" in details, details
    assert infer(grpc_request(), timeout=30).raw_output_contents[0].endswith(b"1983-09-02")  # it serves on


def rest_body(**kw) -> dict:
    tensor = {"name": kw.pop("input", "text"), "shape": [1], "datatype": kw.pop("datatype", "BYTES")}
    doc: dict = {"inputs": [{**tensor, "data": [TEXT.decode()]}]}
    if "extra_input" in kw:
        doc["inputs"].append({"name": kw.pop("extra_input"), "shape": [1], "datatype": "BYTES", "data": ["x"]})
    if "output" in kw:
        doc["outputs"] = [{"name": kw.pop("output")}]
    if "params" in kw:
        params = kw.pop("params")
        doc["parameters"] = params if isinstance(params, dict) else {key: 1 for key in params}
    assert not kw
    return doc


REST_CASES = {  # the JSON schema bounds names and datatypes before a model sees them
    "parameter key": (rest_body(params=["k" * HUGE]), 400, "unknown parameter 'kkk"),
    "input name": (rest_body(extra_input="t" * HUGE), 400, "inputs.1.name: String should have at most 256"),
    "datatype": (rest_body(datatype="D" * HUGE), 400, "inputs.0.datatype: String should have at most 16"),
    "output name": (rest_body(output="o" * HUGE), 400, "outputs.0.name: String should have at most 256"),
    "parameter key and value": (rest_body(params={"k" * HUGE: [1]}), 400, "parameter 'kkk"),
}


def post(address: str, path: str, doc: dict) -> tuple[int, dict]:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(doc).encode(), headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(REST_CASES))
def test_rest_answers_a_10kb_client_string_with_its_status_and_a_short_message(server, case):
    doc, status, fragment = REST_CASES[case]
    got, body = post(server.http_address, "/v2/models/dates-additive/infer", doc)
    error = body.get("error", "")
    assert got == status, error[:200]
    assert len(error.encode()) < 1024 and fragment in error, error
    got, body = post(server.http_address, "/v2/models/dates-additive/infer", rest_body())
    assert got == 200 and body["outputs"][0]["data"][0].endswith("1983-09-02")
