"""The /metrics endpoint cannot be exhausted into threads, and series come only from a closed set.

The endpoint serves from one thread with a bound on open connections and a timeout; model
series carry the attention variant from the registered set, and an unloaded model's go away.
The latency of inference while the endpoint is flooded is measured by benchmarks/hostile.py.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from protocol.gen.inference import grpc_service_pb2 as pb
from tests.helpers.server import RunningServer, start_server
from tests.helpers.wait import wait_until

MAX_CONNECTIONS = 4
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def repo(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("metrics") / "repo"
    shutil.copytree(reference_repository / "sort-pointer", repo / "sort-pointer")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    metrics = {"max_connections": MAX_CONNECTIONS, "timeout_seconds": TIMEOUT, "triton_names": True}
    srv = start_server(repo, metrics=metrics, model_control_mode="explicit")
    yield srv
    srv.stop()


def get(server: RunningServer, path: str = "/metrics", headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.app.metrics_port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_idle_connections_are_bounded_and_hold_no_threads(server: RunningServer):
    """Idle connections past the bound make room (the oldest is closed), never threads; each held
    one is closed after the timeout with nothing answered."""
    endpoint = server.app.metrics_server
    threads = threading.active_count()
    accepted_before, evicted_before = endpoint.accepted, endpoint.evicted
    sockets = [socket.create_connection(("127.0.0.1", server.app.metrics_port)) for _ in range(40)]
    try:
        wait_until(lambda: endpoint.accepted - accepted_before == 40, "40 accepted connections", timeout=10)
        assert endpoint.active <= MAX_CONNECTIONS and endpoint.peak <= MAX_CONNECTIONS
        assert threading.active_count() <= threads + 1
        assert endpoint.evicted - evicted_before >= 40 - MAX_CONNECTIONS
        for s in sockets:
            s.settimeout(TIMEOUT * 10)
        with contextlib.suppress(ConnectionResetError):
            assert all(s.recv(64) == b"" for s in sockets)  # closed (evicted or timed out), nothing answered
        wait_until(lambda: endpoint.active == 0, "every held connection to end", timeout=TIMEOUT * 5)
    finally:
        for s in sockets:
            s.close()
    status, _, body = get(server)
    assert status == 200 and b"attnserve_" in body


def test_a_scrape_is_answered_while_500_idle_connections_are_held(server: RunningServer):
    endpoint = server.app.metrics_server
    accepted_before = endpoint.accepted
    sockets = []
    try:
        for _ in range(500):
            sockets.append(socket.create_connection(("127.0.0.1", server.app.metrics_port), timeout=10))
        wait_until(lambda: endpoint.accepted - accepted_before >= 500, "500 accepted connections", timeout=20)
        for _ in range(3):
            started = time.monotonic()
            status, _, body = get(server)
            took = time.monotonic() - started
            assert status == 200 and b"attnserve_" in body
            assert took < 1.0, f"a scrape took {took:.2f} s with 500 idle connections held"
        assert endpoint.active <= MAX_CONNECTIONS
        # the held ones time out: the server keeps none of them, whatever the clients do
        wait_until(lambda: endpoint.active == 0, "the idle connections to be closed", timeout=TIMEOUT * 5)
    finally:
        for s in sockets:
            s.close()


def test_a_silent_or_slow_client_is_closed_after_the_timeout(server: RunningServer):
    with socket.create_connection(("127.0.0.1", server.app.metrics_port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        s.settimeout(TIMEOUT * 10)
        assert s.recv(64) == b""  # closed by the server, nothing answered


def test_a_10_mb_header_gets_431(server: RunningServer):
    with socket.create_connection(("127.0.0.1", server.app.metrics_port)) as s:
        s.settimeout(TIMEOUT * 10)
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * (10 * 2**20) + b"\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head)
        assert s.recv(64).startswith(b"HTTP/1.1 431 ")
    assert get(server)[0] == 200  # and the endpoint still serves


def test_http_surface(server: RunningServer):
    status, headers, body = get(server)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert list(text_string_to_metric_families(body.decode()))
    status, headers, body = get(server, headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and b"attnserve_" in gzip.decompress(body)
    status, headers, _ = get(server, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert get(server, "/other")[0] == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=10) as r:
        assert r.status == 200
    conn = http.client.HTTPConnection("127.0.0.1", server.app.metrics_port, timeout=10)
    conn.request("POST", "/metrics", body=b"")
    assert conn.getresponse().status == 405
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.app.metrics_port, timeout=10)
    conn.request("HEAD", "/metrics")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"" and int(response.getheader("Content-Length")) > 0
    conn.close()


def series(server: RunningServer) -> list[tuple[str, tuple]]:
    server.settle()
    _, _, body = get(server)
    return [
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    ]


def sort(stub) -> None:
    req = pb.ModelInferRequest(model_name="sort-pointer")
    req.inputs.add(name="values", datatype="INT64", shape=[1, 3])
    req.raw_input_contents.append(np.array([[3, 1, 2]], dtype="<i8").tobytes())
    assert np.frombuffer(stub.ModelInfer(req, timeout=30).raw_output_contents[0], "<i8").tolist() == [1, 2, 0]


def load(stub, override: str | None = None) -> None:
    req = pb.RepositoryModelLoadRequest(model_name="sort-pointer")
    if override is not None:
        req.parameters["config"].string_param = override
    stub.RepositoryModelLoad(req, timeout=60)


def test_loads_with_invented_attention_labels_add_no_series(server: RunningServer, stub, repo: Path):
    config_path = repo / "sort-pointer" / "config.yaml"
    original = config_path.read_text()
    sort(stub)
    before = series(server)
    try:
        for i in range(30):
            config = yaml.safe_load(original)
            config["attention"] = f"invented-{i}"  # the operator's file: labelled "other"
            config_path.write_text(yaml.safe_dump(config))
            load(stub)
            sort(stub)
            with pytest.raises(grpc.RpcError) as err:  # a client cannot change it at all
                load(stub, f'{{"attention": "client-{i}"}}')
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = series(server)
        labels = {dict(lab).get("attention") for _, lab in after} - {None}
        assert labels == {"other"}, labels
        assert len(after) == len(before), set(after) ^ set(before)
    finally:
        config_path.write_text(original)
        load(stub)
    assert {dict(lab).get("attention") for _, lab in series(server)} - {None} == {"additive"}


def test_an_unloaded_models_series_are_removed(server: RunningServer, stub):
    sort(stub)
    assert any(dict(lab).get("model") == "sort-pointer" for _, lab in series(server))
    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="sort-pointer"), timeout=30)
    try:
        server.settle()
        remaining = [(n, lab) for n, lab in series(server) if dict(lab).get("model") == "sort-pointer"]
        assert remaining == []
    finally:
        load(stub)
    sort(stub)
