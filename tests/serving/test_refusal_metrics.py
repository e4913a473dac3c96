"""Refused calls are counted (attnserve_refusals_total) by protocol, method and code, and the
token a client presented appears in no metric and no log line."""

from __future__ import annotations

import http.client
import logging
import secrets
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
INFER_TOKEN, CONTROL_TOKEN = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
BAD_TOKEN = "not-a-token-" + secrets.token_urlsafe(18)  # looks like one: the server must not echo it
INVENTED = "model-nobody-serves-" + secrets.token_hex(6)
CALLS = 100


@pytest.fixture(scope="module")
def records() -> Iterator[list[logging.LogRecord]]:
    """Every log record while the module runs, at every level."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler, root = Keep(logging.DEBUG), logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield kept
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture(scope="module")
def server(reference_repository: Path, records: list[logging.LogRecord]) -> Iterator[RunningServer]:
    srv = start_server(
        reference_repository, models=[MODEL], auth={"infer_token": INFER_TOKEN, "control_token": CONTROL_TOKEN}
    )
    yield srv
    srv.stop()


def scrape(server: RunningServer) -> str:
    server.settle()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def refusals(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["protocol"], s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "attnserve_refusals"
        for s in family.samples
        if s.name == "attnserve_refusals_total"
    }


def rest(server: RunningServer, method: str, path: str, token: str | None) -> int:
    host, port = server.http_address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        method, path, b"{}" if method == "POST" else None, {"authorization": f"Bearer {token}"} if token else {}
    )
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_hundred_bad_tokens_are_counted_and_never_written(server: RunningServer, records):
    before = refusals(scrape(server))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("authorization", f"Bearer {BAD_TOKEN}"),)
        for _ in range(CALLS):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelMetadata(pb.ModelMetadataRequest(name=INVENTED), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a known token without the scope, and a method nobody serves
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name=MODEL),
                metadata=(("authorization", f"Bearer {INFER_TOKEN}"),),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        invented = channel.unary_unary(f"/inference.GRPCInferenceService/{INVENTED}")
        with pytest.raises(grpc.RpcError) as info:
            invented(b"", metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(CALLS):
        assert rest(server, "POST", f"/v2/models/{INVENTED}/infer", BAD_TOKEN) == 401
    assert rest(server, "GET", f"/v2/models/{MODEL}/config", None) == 401
    assert rest(server, "POST", f"/v2/repository/models/{MODEL}/unload", INFER_TOKEN) == 403

    text = scrape(server)
    after = refusals(text)
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert grown == {
        ("grpc", "ModelMetadata", "UNAUTHENTICATED"): CALLS,
        ("grpc", "RepositoryModelUnload", "PERMISSION_DENIED"): 1,
        ("grpc", "unknown", "UNAUTHENTICATED"): 1,
        ("http", "ModelInfer", "UNAUTHENTICATED"): CALLS,
        ("http", "ModelConfig", "UNAUTHENTICATED"): 1,
        ("http", "RepositoryModelUnload", "PERMISSION_DENIED"): 1,
    }
    # the client's text makes no series and no log line
    logged = "\n".join(r.getMessage() + " " + repr(r.args) for r in records)
    for secret in (BAD_TOKEN, INFER_TOKEN, CONTROL_TOKEN, INVENTED):
        assert secret not in text
        assert secret not in logged
    assert records, "the server logged nothing: the log capture is not working"
