"""TLS and mutual TLS over real channels: tritonclient, attnserve's clients and CLI, plaintext
refused, the metrics endpoint over HTTPS; certificates made at test time."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from cli.main import main
from client import Client, ClientError
from tests.helpers.paths import ROOT
from tests.helpers.pki import Pki, make_pki
from tests.helpers.server import RunningServer, start_server

MODEL = "dates-additive"
DATE = "Freitag, 2. September 1983"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(reference_repository: Path, pki: Pki) -> Iterator[RunningServer]:
    srv = start_server(reference_repository, models=[MODEL], tls={"cert": pki.server.cert, "key": pki.server.key})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mtls_server(reference_repository: Path, pki: Pki) -> Iterator[RunningServer]:
    tls = {"cert": pki.server.cert, "key": pki.server.key, "client_ca": pki.ca, "require_client_auth": True}
    srv = start_server(reference_repository, models=[MODEL], tls=tls)
    yield srv
    srv.stop()


def triton_translate(client: tc.InferenceServerClient) -> str:
    inp = tc.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array([DATE.encode()], dtype=np.object_))
    return client.infer(MODEL, [inp]).as_numpy("text")[0].decode()


def scrape(server: RunningServer, context: ssl.SSLContext | None, scheme: str = "https") -> str:
    url = f"{scheme}://127.0.0.1:{server.app.metrics_port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return response.read().decode()


# --- TLS ------------------------------------------------------------------------------------


def test_tritonclient_over_tls_with_the_ca(tls_server: RunningServer, pki: Pki):
    client = tc.InferenceServerClient(tls_server.address, ssl=True, root_certificates=str(pki.ca))
    assert client.is_server_ready()
    assert triton_translate(client) == "1983-09-02"


def test_tritonclient_with_the_wrong_ca_or_plaintext_fails(tls_server: RunningServer, pki: Pki):
    wrong = tc.InferenceServerClient(tls_server.address, ssl=True, root_certificates=str(pki.other_ca))
    plain = tc.InferenceServerClient(tls_server.address)
    for client in (wrong, plain):
        with pytest.raises(InferenceServerException) as info:
            client.is_server_live(client_timeout=10)
        assert info.value.status() == "StatusCode.UNAVAILABLE"


def test_plaintext_to_a_tls_port_fails(tls_server: RunningServer):
    with Client(tls_server.address, timeout=10) as client, pytest.raises(ClientError) as info:
        client.ready()
    assert info.value.code == "UNAVAILABLE"


def test_attnserve_clients_over_tls(tls_server: RunningServer, pki: Pki, capsys: pytest.CaptureFixture[str]):
    with Client(tls_server.address, ca=pki.ca) as client:
        assert client.translate(MODEL, DATE)[0].text == "1983-09-02"
    with Client(tls_server.address, timeout=10, ca=pki.other_ca) as client, pytest.raises(ClientError) as info:
        client.ready()
    assert info.value.code == "UNAVAILABLE"
    url, ca = tls_server.address, str(pki.ca)
    assert main(["client", "translate", MODEL, DATE, "--url", url, "--ca", ca]) == 0
    assert capsys.readouterr().out == f"{DATE} -> 1983-09-02\n"
    assert main(["health", "--url", url, "--ca", ca]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert main(["health", "--url", url, "--timeout", "5"]) == 1  # plaintext
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_metrics_over_https(tls_server: RunningServer, pki: Pki):
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert "attnserve_model_ready" in scrape(tls_server, context)
    with pytest.raises(OSError):  # the server speaks TLS only
        scrape(tls_server, None, "http")
    with pytest.raises(urllib.error.URLError) as info:  # a server certificate the client does not trust
        scrape(tls_server, ssl.create_default_context(cafile=str(pki.other_ca)))
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_an_idle_connection_does_not_stop_the_metrics_endpoint(tls_server: RunningServer, pki: Pki):
    """prometheus_client's own TLS mode handshakes in its accept loop: a silent TCP connection
    there blocks every later scrape. Here each connection handshakes in its own thread."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    with socket.create_connection(("127.0.0.1", tls_server.app.metrics_port)):
        assert "attnserve_model_ready" in scrape(tls_server, context)


# --- mutual TLS -----------------------------------------------------------------------------


def test_mtls_with_a_client_certificate(mtls_server: RunningServer, pki: Pki):
    client = tc.InferenceServerClient(
        mtls_server.address,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=str(pki.client.key),
        certificate_chain=str(pki.client.cert),
    )
    assert triton_translate(client) == "1983-09-02"
    with Client(mtls_server.address, ca=pki.ca, cert=pki.client.cert, key=pki.client.key) as ours:
        assert ours.translate(MODEL, DATE)[0].text == "1983-09-02"
    conn = ["--url", mtls_server.address, "--ca", str(pki.ca), "--cert", str(pki.client.cert)]
    assert main(["client", *conn, "--key", str(pki.client.key), "models"]) == 0


@pytest.mark.parametrize("who", ["no certificate", "a certificate from another CA"])
def test_mtls_without_a_trusted_client_certificate_fails(mtls_server: RunningServer, pki: Pki, who: str):
    mine = {} if who == "no certificate" else {"cert": pki.stranger.cert, "key": pki.stranger.key}
    with Client(mtls_server.address, timeout=10, ca=pki.ca, **mine) as client, pytest.raises(ClientError) as info:
        client.ready()
    assert info.value.code == "UNAVAILABLE"
    options = {} if not mine else {"private_key": str(mine["key"]), "certificate_chain": str(mine["cert"])}
    triton = tc.InferenceServerClient(mtls_server.address, ssl=True, root_certificates=str(pki.ca), **options)
    with pytest.raises(InferenceServerException):
        triton.is_server_live(client_timeout=10)


def test_mtls_metrics_need_the_client_certificate(mtls_server: RunningServer, pki: Pki):
    context = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(OSError):  # ssl.SSLError or a reset, depending on when the server refuses
        scrape(mtls_server, context)
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    assert "attnserve_model_ready" in scrape(mtls_server, context)


def test_health_probe_over_mtls(mtls_server: RunningServer, pki: Pki):
    channel = grpc.secure_channel(
        mtls_server.address,
        grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client.key.read_bytes(), pki.client.cert.read_bytes()),
    )
    with channel:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


# --- start-up -------------------------------------------------------------------------------


def test_serve_with_a_mismatched_key_exits_with_a_clear_error(reference_repository: Path, pki: Pki):
    env = {
        "ATTNSERVE_TLS__CERT": str(pki.server.cert),
        "ATTNSERVE_TLS__KEY": str(pki.client.key),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--repository", str(reference_repository), "--grpc-port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"attnserve serve: tls.cert / tls.key ({pki.server.cert}, {pki.client.key}): key values mismatch"
    )
