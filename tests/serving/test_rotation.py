"""A rotated tokens file takes effect without a restart, under concurrent clients; a malformed
replacement is refused and the tokens in force keep serving."""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.server import RunningServer, start_server

MODEL = "sort-pointer"
KEPT, REVOKED, ADDED = (secrets.token_urlsafe(24) for _ in range(3))
CLIENTS = 8


def write_tokens(path: Path, text: str) -> None:
    """Replace the file as a secret manager does: write beside it, then rename over it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


@pytest.fixture()
def records() -> Iterator[list[logging.LogRecord]]:
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler, root = Keep(logging.INFO), logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield kept
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture()
def rotating(reference_repository: Path, tmp_path: Path, records) -> Iterator[tuple[RunningServer, Path]]:
    tokens = tmp_path / "tokens"
    write_tokens(tokens, f"{KEPT} infer\n{REVOKED} infer\n")
    srv = start_server(reference_repository, models=[MODEL], auth={"tokens_file": str(tokens), "reload_seconds": 0.5})
    yield srv, tokens
    srv.stop()


def code(stub: pb_grpc.GRPCInferenceServiceStub, token: str) -> grpc.StatusCode:
    try:
        stub.ModelMetadata(
            pb.ModelMetadataRequest(name=MODEL), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def wait_for(check, what: str, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def rest(server: RunningServer, token: str) -> int:
    host, port = server.http_address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", f"/v2/models/{MODEL}", headers={"authorization": f"Bearer {token}"})
    status = conn.getresponse().status
    conn.close()
    return status


def reloads(server: RunningServer) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "attnserve_credentials_reloads"
        for s in f.samples
        if s.name.endswith("_total")
    }


def test_a_rotated_tokens_file_takes_effect_and_a_broken_one_is_refused(rotating, records):
    server, tokens = rotating
    failures: list[str] = []
    calls = [0] * CLIENTS
    stop = threading.Event()

    def client(i: int) -> None:  # a client of the kept token, on its own channel, all along
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set() and calls[i] < 5000:
                got = code(stub, KEPT)
                calls[i] += 1
                if got != grpc.StatusCode.OK:
                    failures.append(f"client {i}: {got}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert code(stub, REVOKED) == grpc.StatusCode.OK
            assert code(stub, ADDED) == grpc.StatusCode.UNAUTHENTICATED
            write_tokens(tokens, f"{KEPT} infer\n{ADDED} infer\n")
            wait_for(lambda: code(stub, REVOKED) == grpc.StatusCode.UNAUTHENTICATED, "the revoked token refused", 5)
            assert code(stub, ADDED) == grpc.StatusCode.OK
            assert rest(server, REVOKED) == 401 and rest(server, ADDED) == 200  # REST checks the same tokens
            assert reloads(server) == {"ok": 1.0}

            write_tokens(tokens, f"{KEPT} infer\nthis line is not a token line\n")
            wait_for(lambda: reloads(server).get("refused") == 1.0, "the broken file refused", 5)
            assert code(stub, ADDED) == grpc.StatusCode.OK and code(stub, REVOKED) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures, failures[:5]
    assert all(n > 0 for n in calls)
    refused = [r.getMessage() for r in records if r.levelno == logging.ERROR and "refused" in r.getMessage()]
    assert len(refused) == 1 and str(tokens) in refused[0] and ":2:" in refused[0]
    logged = "\n".join(r.getMessage() for r in records)
    assert KEPT not in logged and REVOKED not in logged and ADDED not in logged
