"""KServe V2 REST over real sockets: tritonclient.http unchanged, the same answers and counts as
gRPC, errors with their HTTP codes, the limits a hostile client meets, and readiness while draining."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import re
import signal
import socket
import ssl
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from serving.http.server import SHUTTING_DOWN, TOO_MANY
from tests.helpers.pki import make_pki
from tests.helpers.processes import Processes, onnx_only
from tests.helpers.server import RunningServer, start_server

DATES = ["Freitag, 2. September 1983", "14 de març 2003", "perjantai 7. kesäkuuta 1957", "3 mars 2021"]
DOC = "real-time strategy game. Build an empire of seven kingdoms, trade, and fight wars."


# --- helpers -----------------------------------------------------------------------------


def call(address: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, decoded JSON body or raw bytes) of one request on a fresh connection."""
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
        return response.status, dict(response.getheaders()), json.loads(data) if kind == "application/json" else data
    finally:
        conn.close()


def infer(address: str, model: str, doc: dict | bytes, headers: dict | None = None, version: str = ""):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return call(address, "POST", path, body, headers)


def text_request(texts: list[str], outputs: list[str] | None = None, **params) -> dict:
    doc: dict = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    if outputs is not None:
        doc["outputs"] = [{"name": o} for o in outputs]
    if params:
        doc["parameters"] = params
    return doc


def values_request(rows: list[list[int]] | object, shape: list[int], datatype: str = "INT64") -> dict:
    return {"inputs": [{"name": "values", "shape": shape, "datatype": datatype, "data": rows}]}


def text_input(module, texts: list[str], binary: bool = True):
    inp = module.InferInput("text", [len(texts)], "BYTES")
    array = np.array([t.encode() for t in texts], dtype=np.object_)
    if module is th:
        inp.set_data_from_numpy(array, binary_data=binary)
    else:
        inp.set_data_from_numpy(array)
    return inp


def raw_socket(address: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, whole raw response) of a response that ends by closing the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return (int(match.group(1)) if match else 0), data


def http_address(log: list[str]) -> str:
    """The REST address of a `serve` subprocess, from the line that says it is serving."""
    return "127.0.0.1:" + re.search(r"HTTP on port (\d+)", log[-1]).group(1)


def scrape(srv: RunningServer) -> dict[tuple[str, str], float]:
    """attnserve_requests_total by (model, code)."""
    srv.settle()
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.app.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "attnserve_requests_total":
                counts[s.labels["model"], s.labels["code"]] += s.value
    return counts


def statistics(address: str, model: str) -> tuple[int, int]:
    """(success, fail) counts of ModelStatistics over gRPC."""
    with grpc.insecure_channel(address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name=model), timeout=10
        )
    inf = stats.model_stats[0].inference_stats
    return inf.success.count, inf.fail.count


@pytest.fixture(scope="module")
def http_client(server) -> Iterator[th.InferenceServerClient]:
    client = th.InferenceServerClient(server.http_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(server.address)


# --- tritonclient.http, unchanged ---------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_translate_equals_the_grpc_answer(http_client, grpc_client, binary):
    wanted = ["text", "attention"]
    grpc_result = grpc_client.infer(
        "dates-additive", [text_input(tg, DATES)], outputs=[tg.InferRequestedOutput(o) for o in wanted]
    )
    result = http_client.infer(
        "dates-additive",
        [text_input(th, DATES, binary)],
        outputs=[th.InferRequestedOutput(o, binary_data=binary) for o in wanted],
        request_id="r7",
    )
    texts = [t.decode() if isinstance(t, bytes) else t for t in result.as_numpy("text")]
    assert texts == [t.decode() for t in grpc_result.as_numpy("text")] == ["1983-09-02", "2003-03-14",
                                                                           "1957-06-07", "2021-03-03"]  # fmt: skip
    attention = result.as_numpy("attention")
    assert attention.dtype == np.float32 and attention.shape[:2] == (4, 11)
    np.testing.assert_array_equal(attention, grpc_result.as_numpy("attention"))  # JSON floats round-trip exactly
    response = result.get_response()
    assert response["id"] == "r7" and response["model_version"] == "1"
    assert response["parameters"] == {"backend": "onnxruntime"}


def test_tritonclient_http_defaults_sort_and_classify(http_client, grpc_client):
    """No outputs named: every output, in binary (tritonclient's default); INT64 in, several models."""
    inp = th.InferInput("values", [1, 6], "INT64")
    rows = np.array([[42, 7, 93, 15, 61, 3]], dtype=np.int64)
    inp.set_data_from_numpy(rows)
    result = http_client.infer("sort-pointer", [inp])
    assert rows[0][result.as_numpy("order")[0]].tolist() == sorted(rows[0].tolist())
    assert {o["name"] for o in result.get_response()["outputs"]} == {"order", "attention"}
    result = http_client.infer("debian-han", [text_input(th, [DOC], binary=False)], parameters={"backend": "torch"})
    expected = grpc_client.infer("debian-han", [text_input(tg, [DOC])], parameters={"backend": "torch"})
    assert result.as_numpy("label")[0] == expected.as_numpy("label")[0] == b"games"
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected.as_numpy("probabilities"))


def test_health_and_metadata_answer_as_over_grpc(http_client, grpc_client):
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert http_client.is_model_ready("dates-additive") and http_client.is_model_ready("dates-additive", "1")
    assert not http_client.is_model_ready("dates-additive", "7")
    meta = http_client.get_server_metadata()
    assert meta["name"] == "attnserve" and "binary_tensor_data" in meta["extensions"]
    for model in ("dates-additive", "sort-pointer", "debian-han"):
        md = http_client.get_model_metadata(model)
        expected = grpc_client.get_model_metadata(model, as_json=True)
        assert md["name"] == expected["name"] and md["versions"] == expected["versions"]
        assert md["platform"] == expected["platform"]
        for kind in ("inputs", "outputs"):
            assert md[kind] == [{**t, "shape": [int(d) for d in t["shape"]]} for t in expected[kind]]
    assert http_client.get_model_metadata("sort-pointer", "1")["name"] == "sort-pointer"


def test_binary_inputs_nested_json_and_gzip_bodies(server):
    """The binary-data extension by hand (BYTES and INT64), nested JSON data, a gzip body."""
    texts = np.array([b"3 mars 2021", b"Freitag, 2. September 1983"], dtype=np.object_)
    raw_text = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    wanted = [{"name": "text", "parameters": {"binary_data": True}}, {"name": "output_lengths"}]
    doc = {"inputs": [tensor("text", [2], "BYTES", binary_data_size=len(raw_text))], "outputs": wanted}
    header = json.dumps(doc).encode()
    status, headers, body = infer(
        server.http_address, "dates-additive", header + raw_text, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    split = int(headers["inference-header-content-length"])
    doc = json.loads(body[:split])
    text, lengths = doc["outputs"]
    assert text["parameters"]["binary_data_size"] == len(body) - split
    assert lengths == {"name": "output_lengths", "datatype": "INT64", "shape": [2], "data": [11, 11]}  # with EOS
    assert body[split:] == b"".join(struct.pack("<I", 10) + t for t in (b"2021-03-03", b"1983-09-02"))
    for wrong in ("x", "-1", str(len(header) + len(raw_text) + 1)):
        status, _, doc = infer(server.http_address, "dates-additive", header + raw_text,
                               {"Inference-Header-Content-Length": wrong})  # fmt: skip
        assert status == 400 and "Inference-Header-Content-Length must be an integer" in doc["error"], wrong

    status, _, doc = infer(server.http_address, "sort-pointer", values_request([[[5, 3], [9]], [[1, 7]]], [1, 5]))
    assert status == 400 and "not rectangular" in doc["error"]
    status, _, doc = infer(server.http_address, "sort-pointer", {**values_request([[5, 3, 9, 1, 7]], [1, 5]),
                                                                 "outputs": [{"name": "order"}]})  # fmt: skip
    assert (status, doc["outputs"][0]["data"]) == (200, [3, 1, 0, 4, 2])
    rows = np.array([[5, 3, 9, 1, 7]], dtype="<i8").tobytes()
    doc = {"inputs": [tensor("values", [1, 5], "INT64", binary_data_size=40)], "outputs": [{"name": "order"}]}
    header = json.dumps(doc).encode()
    gzipped = {"Content-Encoding": "gzip", "Inference-Header-Content-Length": str(len(header))}
    status, _, doc = infer(server.http_address, "sort-pointer", gzip.compress(header + rows), gzipped)
    assert (status, doc["outputs"][0]["data"]) == (200, [3, 1, 0, 4, 2])


# --- errors: the same table as gRPC, {"error": message} ------------------------------------


def tensor(name: str, shape: list[int], datatype: str, data: object = None, **parameters: object) -> dict:
    t: dict = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        t["data"] = data
    if parameters:
        t["parameters"] = parameters
    return t


ONE = text_request(["3 mars 2021"])
BAD = [
    # (name, model, body, status, message fragment)
    ("malformed JSON", "dates-additive", b'{"inputs": [', 400, "not valid JSON"),
    ("not an object", "dates-additive", b"[1, 2]", 400, "must be a JSON object"),
    ("no inputs", "dates-additive", {"outputs": []}, 400, "inputs: Field required"),
    ("a typo", "dates-additive", {"input": []}, 400, "Extra inputs are not permitted"),
    ("wrong datatype", "dates-additive", {"inputs": [tensor("text", [1], "FP32", [1.5])]}, 400,
     "input 'text' must be BYTES, got FP32"),
    ("unknown datatype", "dates-additive", {"inputs": [tensor("text", [1], "STRING", ["x"])]}, 400,
     "input 'text' must be BYTES, got STRING"),  # the model's header check, before any decoding
    ("shape and data disagree", "dates-additive", {"inputs": [tensor("text", [2], "BYTES", ["3 mars 2021"])]}, 400,
     "needs 2 values, got 1"),
    ("strings for INT64", "sort-pointer", values_request([["1", "2"]], [1, 2]), 400,
     "INT64 data must be integers; element 0 is a string"),
    ("out of range", "sort-pointer", values_request([[1, 2**63]], [1, 2]), 400,
     "element 1 is out of the range of INT64"),
    ("numbers for BYTES", "dates-additive", {"inputs": [tensor("text", [1], "BYTES", [7])]}, 400,
     "element 0 is an integer"),
    ("negative dimension", "sort-pointer", values_request([[1]], [1, -1]), 400, "greater than or equal to 0"),
    ("unknown output", "dates-additive", text_request(["3 mars 2021"], ["txet"]), 400, "has no output(s) ['txet']"),
    ("unknown parameter", "dates-additive", text_request(["3 mars 2021"], beam=2), 400, "unknown parameter 'beam'"),
    ("timeout as a string", "dates-additive", text_request(["3 mars 2021"], timeout="10ms"), 400,
     "parameter 'timeout' must be a non-negative integer (microseconds), got '10ms'"),
    ("negative timeout", "dates-additive", text_request(["3 mars 2021"], timeout=-1), 400,
     "parameter 'timeout' must be a non-negative integer (microseconds), got -1"),
    ("fractional timeout", "dates-additive", text_request(["3 mars 2021"], timeout=1.5), 400,
     "parameter 'timeout' must be a non-negative integer (microseconds), got 1.5"),
    ("binary size past the body", "sort-pointer", {"inputs": [tensor("values", [1, 2], "INT64", binary_data_size=16)]},
     400, "runs past the body's 0 bytes"),
    ("shared memory", "dates-additive", {"inputs": [tensor("text", [1], "BYTES", shared_memory_region="r")]}, 501,
     "does not offer shared memory"),
    ("unknown model", "no-such-model", ONE, 404, "unknown model 'no-such-model'"),
    ("a path for a name", "..%2F..%2Fetc", ONE, 400, "invalid model name '../../etc'"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "body", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_get_their_code_and_message(server, reference_repository, model, body, status, message):
    got, _, doc = infer(server.http_address, model, body)
    assert (got, set(doc)) == (status, {"error"}), doc
    assert message in doc["error"]
    assert str(reference_repository.resolve()) not in doc["error"] and "/home" not in doc["error"]


def test_unknown_version_endpoint_and_method(server):
    assert infer(server.http_address, "dates-additive", text_request(["x"]), version="9")[0] == 404
    status, _, doc = call(server.http_address, "GET", "/v2/models/dates-additive/versions/9/ready")
    assert (status, doc["ready"]) == (503, False)
    status, _, doc = call(server.http_address, "GET", "/v2/models/no-such-model/ready")
    assert status == 404 and "unknown model" in doc["error"]
    status, _, doc = call(server.http_address, "GET", "/v2/models/dates-additive/trace/setting")
    assert status == 404 and "no endpoint" in doc["error"]
    status, headers, doc = call(server.http_address, "GET", "/v2/models/dates-additive/infer")
    assert (status, headers["allow"]) == (405, "POST")
    assert call(server.http_address, "GET", "/metrics")[0] == 404


def test_requests_are_counted_once_in_statistics_and_prometheus(server):
    """Three answered and two refused REST requests move ModelStatistics and attnserve_requests_total
    by exactly that much (the record of the gRPC path)."""
    before, prom = statistics(server.address, "sort-pointer"), scrape(server)
    for _ in range(3):
        assert infer(server.http_address, "sort-pointer", values_request([[5, 3, 9]], [1, 3]))[0] == 200
    assert infer(server.http_address, "sort-pointer", values_request([[5, 3]], [1, 3]))[0] == 400
    assert infer(server.http_address, "sort-pointer", b"{")[0] == 400
    success, fail = statistics(server.address, "sort-pointer")
    assert (success - before[0], fail - before[1]) == (3, 2)
    after = scrape(server)
    assert after["sort-pointer", "OK"] - prom["sort-pointer", "OK"] == 3
    assert after["sort-pointer", "INVALID_ARGUMENT"] - prom["sort-pointer", "INVALID_ARGUMENT"] == 2


# --- limits a hostile client meets -----------------------------------------------------


@pytest.fixture(scope="module")
def tight(reference_repository: Path) -> Iterator[RunningServer]:
    """sort-pointer behind small HTTP limits and short timeouts."""
    limits = {"max_body_bytes": 64 * 2**10, "max_json_bytes": 16 * 2**10, "max_header_bytes": 2048,
              "max_connections": 4, "idle_timeout_seconds": 1.0, "header_timeout_seconds": 1.0,
              "body_timeout_seconds": 1.0}  # fmt: skip
    srv = start_server(reference_repository, models=["sort-pointer"], http=limits)
    yield srv
    srv.stop()


def test_a_body_over_the_limit_is_refused_before_it_is_read(tight):
    sock = raw_socket(tight.http_address)
    with sock:  # the head alone: 413 comes back without a byte of the body sent
        sock.sendall(b"POST /v2/models/sort-pointer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        status, response = read_response(sock)
    assert status == 413 and b"99999999 bytes, over the limit of 65536" in response
    # chunked: refused once the chunks pass the limit
    sock = raw_socket(tight.http_address)
    with sock:
        sock.sendall(b"POST /v2/models/sort-pointer/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(20):
                sock.sendall(b"8000\r\n" + b" " * 0x8000 + b"\r\n")
        status, response = read_response(sock)
    assert status == 413 and b"over the limit of 65536" in response
    # the JSON part has its own, lower limit (parsing holds the event loop); binary data does not count
    big = values_request(list(range(5000)), [1, 5000])
    status, _, doc = infer(tight.http_address, "sort-pointer", big)
    assert status == 413 and "send large tensors as binary data" in doc["error"]
    # a small gzip body that inflates past the limit
    bomb = gzip.compress(b" " * (10 * 2**20))
    status, _, doc = infer(tight.http_address, "sort-pointer", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "inflates to over 65536 bytes" in doc["error"]
    assert infer(tight.http_address, "sort-pointer", values_request([[2, 1]], [1, 2]))[0] == 200  # still serving


def test_a_large_head_gets_431_and_garbage_gets_400(tight):
    sock = raw_socket(tight.http_address)
    with sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 4096 + b"\r\n\r\n")
        assert read_response(sock)[0] == 431
    sock = raw_socket(tight.http_address)
    with sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert read_response(sock)[0] == 400


def test_slow_and_idle_connections_are_closed(tight):
    sock = raw_socket(tight.http_address)
    with sock:  # a head that never ends: closed (header_timeout_seconds), no answer
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        assert read_response(sock) == (0, b"")
    sock = raw_socket(tight.http_address)
    with sock:  # a body that never comes: 408
        sock.sendall(b"POST /v2/models/sort-pointer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        status, response = read_response(sock)
        assert status == 408 and b"did not arrive within 1.0 s" in response
    sock = raw_socket(tight.http_address)
    with sock:  # keep-alive: one request answered, then the idle connection is closed
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, response = read_response(sock)
        assert status == 200 and response.endswith(b'{"live":true}')


def test_connections_beyond_the_cap_get_503(tight):
    clients = [http.client.HTTPConnection(*tight.http_address.split(":"), timeout=30) for _ in range(4)]
    try:
        for c in clients:  # 4 kept-alive connections: the cap
            c.request("GET", "/v2/health/live")
            assert c.getresponse().read() == b'{"live":true}'
        sock = raw_socket(tight.http_address)
        with sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            status, response = read_response(sock)
        assert status == 503 and TOO_MANY.encode() in response
    finally:
        for c in clients:
            c.close()
    for _ in range(100):  # once they are closed, connections are accepted again
        if call(tight.http_address, "GET", "/v2/health/live")[0] == 200:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("connections were not accepted again")


# --- readiness and drain ---------------------------------------------------------------


@pytest.fixture(scope="module")
def light_repository(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    onnx_only(reference_repository, root)
    return root


def test_ready_is_503_while_draining_after_sigterm_and_requests_still_succeed(
    light_repository: Path, processes: Processes
):
    served = processes.serve(["--repository", str(light_repository)], {"ATTNSERVE_DRAIN_DELAY_SECONDS": "600"})
    try:
        address = http_address(served.log)
        assert call(address, "GET", "/v2/health/ready")[:3:2] == (200, {"ready": True})
        served.proc.send_signal(signal.SIGTERM)
        while (status := call(address, "GET", "/v2/health/ready"))[0] == 200:
            time.sleep(0.01)
        assert status[::2] == (503, {"ready": False})
        assert call(address, "GET", "/v2/health/live")[::2] == (200, {"live": True})
        status, _, doc = call(address, "GET", "/v2/models/sort-pointer/ready")
        assert (status, doc["ready"]) == (503, False)
        status, _, doc = infer(address, "sort-pointer", values_request([[5, 3, 9, 1, 7]], [1, 5]))
        assert status == 200  # still serving during the drain delay, for the load balancer to notice
        served.proc.send_signal(signal.SIGINT)  # skip the delay
        assert served.proc.wait(timeout=30) == 0
    finally:
        if served.proc.poll() is None:
            served.proc.kill()


def looping_client(address: str, results: list[str], stop: threading.Event) -> None:
    """Infer back to back on one kept-alive connection (a new one after a close) until refused."""
    host, port = address.split(":")
    body = json.dumps(values_request([[5, 3, 9, 1, 7]], [1, 5])).encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    while not stop.is_set():
        try:
            conn.request("POST", "/v2/models/sort-pointer/infer", body=body)
            response = conn.getresponse()
            data = response.read()
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            results.append(f"closed:{type(exc).__name__}")  # no answer: the request was never accepted
            return
        results.append("OK" if response.status == 200 else f"{response.status}:{json.loads(data)['error']}")
        if response.status != 200:
            return


def test_sigterm_under_load_answers_every_accepted_rest_request(light_repository: Path, processes: Processes):
    """8 REST clients in a loop, SIGTERM mid-load: each request is answered 200, or refused 503
    (shutting down) or never accepted (connection closed or refused); none fails otherwise, and
    the server's count of answered requests equals the clients' 200s."""
    served = processes.serve(
        ["--repository", str(light_repository), "--models", "sort-pointer"],
        {"ATTNSERVE_DRAIN_DELAY_SECONDS": "0.5", "ATTNSERVE_GRACE_SECONDS": "10"},
    )
    stop = threading.Event()
    try:
        address = http_address(served.log)
        results: list[list[str]] = [[] for _ in range(8)]
        clients = [threading.Thread(target=looping_client, args=(address, r, stop)) for r in results]
        for c in clients:
            c.start()
        while not all(r and r[0] == "OK" for r in results):
            assert all(c.is_alive() for c in clients), results
            time.sleep(0.01)
        served.proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.join(timeout=60)
        assert served.proc.wait(timeout=30) == 0
        log = served.rest_of_log()
    finally:
        stop.set()
        if served.proc.poll() is None:
            served.proc.kill()
    outcomes = Counter(r.split(":")[0] for client in results for r in client)
    assert set(outcomes) <= {"OK", "503", "closed"}, outcomes
    assert all(r == f"503:{SHUTTING_DOWN}" for client in results for r in client if r.startswith("503"))
    stopped = re.search(r"stopped: (\d+) inference request\(s\) answered, (\d+) failed", log)
    assert stopped and (int(stopped.group(1)), int(stopped.group(2))) == (outcomes["OK"], 0), (log, outcomes)


def test_the_rest_port_can_be_turned_off(light_repository: Path):
    srv = start_server(light_repository, http={"enabled": False})
    try:
        assert srv.app.http is None and srv.app.http_port == 0
    finally:
        srv.stop()


def test_tritonclient_reports_the_error_text(http_client):
    with pytest.raises(InferenceServerException) as err:
        http_client.infer("no-such-model", [text_input(th, ["x"])])
    assert err.value.status() == "404" and "unknown model 'no-such-model'" in err.value.message()


# --- the gRPC port's access rules: tokens and TLS -------------------------------------------

TOKEN = "rest-infer-token-0123456789"


@pytest.fixture(scope="module")
def guarded(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """sort-pointer over mutual TLS with an infer token: REST follows the gRPC port's rules."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls = {"cert": pki.server.cert, "key": pki.server.key, "client_ca": pki.ca, "require_client_auth": True}
    srv = start_server(reference_repository, models=["sort-pointer"], tls=tls, auth={"infer_token": TOKEN})
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    yield srv, context, pki
    srv.stop()


def https(address: str, context: ssl.SSLContext, method: str, path: str, body: bytes | None = None, **headers):
    host, port = address.split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_rest_needs_the_infer_token_except_for_health(guarded):
    srv, context, _ = guarded
    body = json.dumps(values_request([[5, 3, 9]], [1, 3])).encode()
    path = "/v2/models/sort-pointer/infer"
    assert https(srv.http_address, context, "GET", "/v2/health/ready")[::2] == (200, {"ready": True})
    assert https(srv.http_address, context, "GET", "/v2/health/live")[0] == 200
    status, headers, doc = https(srv.http_address, context, "POST", path, body)
    assert (status, headers["www-authenticate"]) == (401, "Bearer")
    assert "needs a bearer token with the 'infer' scope" in doc["error"]
    status, _, doc = https(srv.http_address, context, "POST", path, body, authorization="Bearer " + "x" * 20)
    assert (status, doc) == (401, {"error": "invalid bearer token"})
    for endpoint in ("/v2/models/sort-pointer", "/v2/models/sort-pointer/ready", "/v2"):
        assert https(srv.http_address, context, "GET", endpoint)[0] == 401, endpoint
    status, _, doc = https(srv.http_address, context, "POST", path, body, authorization=f"Bearer {TOKEN}")
    assert status == 200 and [o["name"] for o in doc["outputs"]] == ["order", "attention"]


def test_a_request_without_a_token_is_refused_before_its_body_is_read(guarded):
    srv, context, _ = guarded
    host, port = srv.http_address.split(":")
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=30), server_hostname=host) as sock:
        sock.sendall(b"POST /v2/models/sort-pointer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n")
        status, response = read_response(sock)
    assert status == 401 and b"needs a bearer token" in response


def test_rest_over_mutual_tls_needs_a_trusted_client_certificate(guarded):
    srv, _, pki = guarded
    host, port = srv.http_address.split(":")
    with pytest.raises((ssl.SSLError, ConnectionError)):  # plaintext to the TLS port
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/v2/health/live")
        conn.getresponse().read()
    stranger = ssl.create_default_context(cafile=str(pki.ca))
    stranger.load_cert_chain(str(pki.stranger.cert), str(pki.stranger.key))
    for who in (ssl.create_default_context(cafile=str(pki.ca)), stranger):  # no certificate; another CA's
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https(srv.http_address, who, "GET", "/v2/health/live")
    client = th.InferenceServerClient(
        srv.http_address, ssl=True,
        ssl_options={"ca_certs": str(pki.ca), "certfile": str(pki.client.cert), "keyfile": str(pki.client.key)},
    )  # fmt: skip
    try:
        inp = th.InferInput("values", [1, 3], "INT64")
        inp.set_data_from_numpy(np.array([[5, 3, 9]], dtype=np.int64))
        result = client.infer("sort-pointer", [inp], headers={"authorization": f"Bearer {TOKEN}"})
        assert result.as_numpy("order").tolist() == [[1, 0, 2]]
    finally:
        client.close()
