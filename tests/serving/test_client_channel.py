"""The client's channel options: address lists, round-robin, health checks, retries, wait_for_ready,
headers. Parsing is checked without a server; behaviour over real channels: attnserve servers in
this process (one refusing every call, as a draining replica does) and a plain gRPC server that
fails on purpose."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from cli.main import main
from client import AsyncClient, Client, ClientError
from client.channel import RetryPolicy, call_metadata, configure, service_config, target
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from serving.grpc.drain import SHUTTING_DOWN
from tests.helpers.pki import make_pki
from tests.helpers.processes import onnx_only
from tests.helpers.server import RunningServer, start_server

VALUES = np.array([[5, 3, 9, 1, 7]])
ORDER = [3, 1, 0, 4, 2]

# --- parsing, no server --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected", "listed"),
    [
        ("localhost:8001", "localhost:8001", 1),
        ("dns:///attnserve.default.svc:8001", "dns:///attnserve.default.svc:8001", 1),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2", 1),
        ("10.0.0.1:8001,10.0.0.2:8001", "ipv4:10.0.0.1:8001,10.0.0.2:8001", 2),
        (" 10.0.0.1:1 , 10.0.0.1:1,10.0.0.3:3", "ipv4:10.0.0.1:1,10.0.0.3:3", 3),
        ("[::1]:1,[fe80::2]:2", "ipv6:[::1]:1,[fe80::2]:2", 2),
        ("localhost:1,127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2", 2),
    ],
)
def test_target(address: str, expected: str, listed: int):
    assert target(address).target == expected
    assert target(address).listed == listed
    # a list's authority (what TLS verifies) is its first entry as written; a single address keeps gRPC's
    assert target(address).authority == (address.split(",")[0].strip() if listed > 1 else None)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "empty address"),
        ("10.0.0.1:1,", "empty entry"),
        ("10.0.0.1,10.0.0.2:2", "needs host:port"),
        ("10.0.0.1:1,10.0.0.2:x", "needs host:port"),
        ("10.0.0.1:1,[::1]:2", "not all IPv4 or all IPv6"),
        ("10.0.0.1:1,no-such-host.invalid:2", "cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_bad_target(address: str, message: str):
    with pytest.raises(ValueError, match=message):
        target(address)


def test_service_config():
    config = service_config(RetryPolicy(), health_check=True)
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    (method,) = config["methodConfig"]
    assert method["retryPolicy"] == {
        "maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1.0s", "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }  # fmt: skip
    names = {(n["service"], n["method"]) for n in method["name"]}
    assert ("inference.GRPCInferenceService", "ModelInfer") in names
    assert ("attnserve.v1.Attention", "Translate") in names
    # probes answer for one replica, load/unload change state: never retried
    for method_name in ("ServerLive", "ServerReady", "ModelReady", "RepositoryModelLoad", "RepositoryModelUnload"):
        assert ("inference.GRPCInferenceService", method_name) not in names
    assert "methodConfig" not in service_config(None, health_check=False)
    assert "healthCheckConfig" not in service_config(None, health_check=False)


def test_health_checks_default_on_for_a_list_only():
    def checks(address: str, health_check: bool | None = None) -> bool:
        _, options = configure(address, RetryPolicy(), health_check)
        return "healthCheckConfig" in json.loads(dict(options)["grpc.service_config"])

    assert checks("127.0.0.1:1,127.0.0.1:2")
    assert not checks("127.0.0.1:1")  # maybe an L7 load balancer: its health stream reaches some replica
    assert not checks("dns:///attnserve:8001")
    assert checks("dns:///attnserve-headless:8001", health_check=True)
    assert not checks("127.0.0.1:1,127.0.0.1:2", health_check=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 1}, "max_attempts must be 2..5"),
        ({"max_attempts": 6}, "max_attempts must be 2..5"),
        ({"initial_backoff": 2.0, "max_backoff": 1.0}, "backoffs"),
        ({"initial_backoff": 0.0}, "backoffs"),
        ({"backoff_multiplier": 0.0}, "backoff_multiplier"),
        ({"codes": ("UNAVAILABLE", "NOPE")}, "gRPC status names"),
        ({"codes": ("OK",)}, "gRPC status names"),
        ({"codes": ()}, "gRPC status names"),
    ],
)
def test_bad_retry_policy(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_call_metadata():
    assert call_metadata({"X-Team": "search", "x-request-id": "42"}) == (("x-team", "search"), ("x-request-id", "42"))
    assert call_metadata(None) == ()
    for key in ("grpc-timeout", ":path", "trace-bin", " "):
        with pytest.raises(ValueError, match="reserved or binary"):
            call_metadata({key: "v"})
    with pytest.raises(ValueError, match="must be a str"):
        call_metadata({"x-n": 1})  # type: ignore[dict-item]


def test_token_and_metadata_headers_together():
    with Client("127.0.0.1:1", token="t0k", metadata={"X-Team": "search"}) as client:
        assert client.call_metadata == (("authorization", "Bearer t0k"), ("x-team", "search"))
    with Client("127.0.0.1:1", metadata={"authorization": "Bearer t0k"}) as client:  # a header of one's own
        assert client.call_metadata == (("authorization", "Bearer t0k"),)
    with pytest.raises(ValueError, match="either as `token` or as an authorization header"):
        Client("127.0.0.1:1", token="a", metadata={"Authorization": "Bearer b"})


# --- over real channels --------------------------------------------------------------------


@pytest.fixture(scope="module")
def light(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("light")
    onnx_only(reference_repository, root)
    return root


@pytest.fixture(scope="module")
def two_servers(light: Path) -> Iterator[list[RunningServer]]:
    servers = [start_server(light, models=["sort-pointer"]) for _ in range(2)]
    yield servers
    for srv in servers:
        srv.stop()


def answered(srv: RunningServer, ca: Path | None = None) -> int:
    """The server's own count of successful sort-pointer inferences (ModelStatistics)."""
    srv.settle()
    with Client(srv.address, ca=ca) as client:
        stats = client.inference.ModelStatistics(pb.ModelStatisticsRequest(name="sort-pointer"), timeout=5)
    return sum(s.inference_stats.success.count for s in stats.model_stats)


def sort_calls(client: Client, n: int) -> list[str]:
    """`n` calls in a row: "OK" or the error code."""
    outcomes = []
    for _ in range(n):
        try:
            order = client.infer("sort-pointer", {"values": VALUES})["order"].tolist()
            outcomes.append("OK" if order == [ORDER] else f"WRONG {order}")
        except ClientError as exc:
            outcomes.append(f"{exc.code}: {exc.message}")
    return outcomes


@pytest.fixture
def draining(light: Path, two_servers: list[RunningServer]) -> Iterator[tuple[RunningServer, RunningServer]]:
    """A server that refuses every call UNAVAILABLE "shutting down" (its drain gate is closed) while
    its health still says SERVING, as in the moment before a load balancer notices; and one that serves."""
    refusing = start_server(light, models=["sort-pointer"])
    refusing.app.grpc.gate.close()
    yield refusing, two_servers[1]
    refusing.stop()


def test_retry_sends_a_refused_call_to_the_next_replica(draining: tuple[RunningServer, RunningServer]):
    refusing, serving = draining
    address = f"{refusing.address},{serving.address}"
    before, refused_before = answered(serving), refusing.app.grpc.gate.refused
    with Client(address, health_check=False) as client:
        assert sort_calls(client, 20) == ["OK"] * 20
    assert answered(serving) - before == 20
    assert refusing.app.grpc.gate.refused > refused_before  # round-robin did send calls there: retried

    async def run() -> list[str]:  # one call at a time: round-robin alternates, so a retry goes to `serving`
        async with AsyncClient(address, health_check=False) as client:
            results = [await client.infer("sort-pointer", {"values": VALUES}) for _ in range(20)]
        return ["OK" if r["order"].tolist() == [ORDER] else "WRONG" for r in results]

    assert asyncio.run(run()) == ["OK"] * 20

    # without the retry policy the refusals reach the caller: the control that shows the policy works
    with Client(address, health_check=False, retry=None) as client:
        outcomes = sort_calls(client, 20)
    assert f"UNAVAILABLE: {SHUTTING_DOWN}" in outcomes
    assert set(outcomes) == {"OK", f"UNAVAILABLE: {SHUTTING_DOWN}"}


def test_health_checks_keep_calls_off_a_not_serving_replica(two_servers: list[RunningServer]):
    draining, serving = two_servers
    draining.call(draining.app.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
    try:
        before = [answered(s) for s in two_servers]
        with Client(f"{draining.address},{serving.address}") as client:
            assert sort_calls(client, 20) == ["OK"] * 20
        assert [answered(s) - b for s, b in zip(two_servers, before, strict=True)] == [0, 20]
        # a dns:/// target checks health when asked to: its only address is not serving, so no call goes
        with Client(f"dns:///{draining.address}", health_check=True, timeout=5) as client:
            (outcome,) = sort_calls(client, 1)
        assert outcome.startswith("UNAVAILABLE"), outcome
        with Client(f"dns:///{draining.address}", timeout=5) as client:
            assert sort_calls(client, 1) == ["OK"]
    finally:
        draining.call(draining.app.health.set("", health_pb2.HealthCheckResponse.SERVING))
    # both serving: round-robin spreads the calls
    before = [answered(s) for s in two_servers]
    with Client(f"{draining.address},{serving.address}") as client:
        assert sort_calls(client, 20) == ["OK"] * 20
    assert all(answered(s) - b >= 5 for s, b in zip(two_servers, before, strict=True))


def test_cli_url_takes_a_list(two_servers: list[RunningServer], capsys: pytest.CaptureFixture[str]):
    url = ",".join(s.address for s in two_servers)
    before = [answered(s) for s in two_servers]
    sort = ["sort", "sort-pointer", "5", "3", "9", "1", "7"]
    for argv in (["--url", url, *sort], [*sort, "--url", url]) * 2:  # before the action or after it
        assert main(["client", *argv]) == 0
        assert capsys.readouterr().out.splitlines() == ["1 3 5 7 9", "order: 3 1 0 4 2"]
    assert sum(answered(s) - b for s, b in zip(two_servers, before, strict=True)) == 4


def test_round_robin_over_tls(light: Path, tmp_path: Path):
    """Two TLS replicas (one certificate for 127.0.0.1): a list verifies each against its first host."""
    pki = make_pki(tmp_path)
    servers = [start_server(light, models=["sort-pointer"], tls={"cert": pki.server.cert, "key": pki.server.key})
               for _ in range(2)]  # fmt: skip
    try:
        before = [answered(s, pki.ca) for s in servers]
        with Client(",".join(s.address for s in servers), ca=pki.ca) as client:
            assert sort_calls(client, 10) == ["OK"] * 10
        assert all(answered(s, pki.ca) - b >= 3 for s, b in zip(servers, before, strict=True))
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused, and no one else can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_wait_for_ready(closed_port: int):
    address = f"127.0.0.1:{closed_port}"
    with Client(address, timeout=1.0, retry=None) as client, pytest.raises(ClientError) as err:
        client.ready()
    assert err.value.code == "UNAVAILABLE"  # fails fast: nothing listens
    with Client(address, timeout=0.5, wait_for_ready=True) as client, pytest.raises(ClientError) as err:
        client.ready()
    assert err.value.code == "DEADLINE_EXCEEDED"  # waited for a connection until the deadline


class Flaky(pb_grpc.GRPCInferenceServiceServicer):
    """Answers UNAVAILABLE to the first `fail` calls of each method, then OK; records every call."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls: dict[str, list[dict[str, str]]] = {}

    def _answer(self, name: str, context: grpc.ServicerContext) -> bool:
        calls = self.calls.setdefault(name, [])
        calls.append(dict(context.invocation_metadata()))
        if len(calls) <= self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return True

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._answer("ServerReady", context))

    def ModelMetadata(self, request, context):
        self._answer("ModelMetadata", context)
        return pb.ModelMetadataResponse(name=request.name, platform="flaky")


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky(fail=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_retried_methods_and_headers(flaky: tuple[Flaky, str]):
    servicer, address = flaky
    with Client(address, metadata={"X-Team": "search"}) as client:
        assert client.metadata("m")["platform"] == "flaky"  # metadata calls are retried: 2 refusals, then OK
        with pytest.raises(ClientError) as err:
            client.ready()  # probes are not: the first refusal is the answer
    assert err.value.code == "UNAVAILABLE"
    assert len(servicer.calls["ModelMetadata"]) == 3
    assert len(servicer.calls["ServerReady"]) == 1
    assert all(call["x-team"] == "search" for calls in servicer.calls.values() for call in calls)


def test_retry_gives_up_after_max_attempts(flaky: tuple[Flaky, str]):
    servicer, address = flaky
    servicer.fail = 10
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    with Client(address, retry=retry) as client, pytest.raises(ClientError) as err:
        client.metadata("m")
    assert (err.value.code, err.value.message) == ("UNAVAILABLE", "try again")
    assert len(servicer.calls["ModelMetadata"]) == 2
    with Client(address, retry=None) as client, pytest.raises(ClientError):
        client.metadata("m")
    assert len(servicer.calls["ModelMetadata"]) == 3  # no retry policy: one attempt
