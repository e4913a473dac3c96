"""deploy/haproxy: the config carries the health check that deploy/haproxy/grpc_health_check.py
generates, HAProxy accepts it, and the check's bytes are a gRPC health call a real attnserve
answers SERVING, or NOT_SERVING once it drains (tests/serving/test_replicas.py runs the config)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from grpc_health.v1 import health_pb2

from tests.helpers.processes import onnx_only
from tests.helpers.server import RunningServer, start_server

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = ROOT / "deploy" / "haproxy"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpc_health_check", HAPROXY / "grpc_health_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_carries_the_generated_check():
    lines = [line.strip() for line in (HAPROXY / "haproxy.cfg").read_text().splitlines()]
    rules = generator().rules("")
    start = lines.index(rules[0])
    assert lines[start : start + len(rules)] == rules


def test_haproxy_accepts_the_config():
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if haproxy is None:
        pytest.skip("haproxy is not installed here (scripts/install-haproxy.sh installs Debian's package)")
    check = subprocess.run([haproxy, "-c", "-f", str(HAPROXY / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def server(reference_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("light")
    onnx_only(reference_repository, root)
    srv = start_server(root, models=["sort-pointer"])
    yield srv
    srv.stop()


def exchange(port: int, request: bytes, seconds: float = 5.0) -> bytes:
    """Send the check's bytes as HAProxy does; read until the call's trailers (grpc-status) arrive."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        s.sendall(request)
        deadline = time.monotonic() + seconds
        while b"grpc-status" not in received and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def passes(rules: list[str], received: bytes) -> bool:
    """HAProxy's two expects over the received bytes: the answer arrived (rbinary: a regex over the
    hex), and it is SERVING (binary)."""
    answered = rules[3].removeprefix("tcp-check expect rbinary ")
    serving = rules[4].removeprefix("tcp-check expect min-recv 1 binary ")
    assert re.search(answered, received.hex()), received
    return bytes.fromhex(serving) in received


def test_the_check_asks_a_real_server(server: RunningServer):
    gen = generator()
    for service in ("", "sort-pointer"):
        received = exchange(server.port, gen.request(service))
        assert gen.response(gen.SERVING) in received
        assert passes(gen.rules(service), received)
    # a model the server does not have: NOT_FOUND, no response message, so the first expect never matches
    assert not re.search(gen.rules("nope")[3].split()[-1], exchange(server.port, gen.request("nope")).hex())
    server.call(server.app.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
    try:
        received = exchange(server.port, gen.request(""))
        assert gen.response(gen.NOT_SERVING) in received
        assert not passes(gen.rules(""), received)
    finally:
        server.call(server.app.health.set("", health_pb2.HealthCheckResponse.SERVING))


def test_the_generator_refuses_what_it_cannot_encode():
    with pytest.raises(ValueError, match="too long"):
        generator().request("m" * 200)


def test_the_generator_prints_rules():
    script = HAPROXY / "grpc_health_check.py"
    out = subprocess.run([sys.executable, str(script), "sort-pointer"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == generator().rules("sort-pointer")
