"""The serving tests' shared servers: one in process on port 0 over the reference repository
(tests/conftest.py builds it), a stub onto it, and a real Prometheus scraping a second one."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.metrics import query
from tests.helpers.paths import ROOT
from tests.helpers.processes import Processes, free_port
from tests.helpers.server import UNLIMITED, RunningServer, grpc_stub, start_server
from tests.helpers.wait import wait_until

PROMETHEUS_MODELS = ["dates-additive", "dates-dot"]
PROMETHEUS_ITERATION_MODEL = "dates-dot"


@pytest.fixture(scope="session")
def server(reference_repository: Path) -> Iterator[RunningServer]:
    """The shared server; explicit model control, for the tests that load and unload through the API
    (the default, "none", refuses them: tests/serving/test_access.py)."""
    srv = start_server(reference_repository, model_control_mode="explicit")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """An Open Inference Protocol stub onto `server` (a module may define its own), no client-side size limits."""
    with grpc_stub(server.address, UNLIMITED) as s:
        yield s


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """The prometheus binary (.ci/run installs Debian's package); the test skips without it."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("the prometheus binary is not installed here (.ci/run installs Debian's package)")
    return found


@pytest.fixture(scope="module")
def stack(
    prometheus_binary: str, reference_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """(server, Prometheus base URL): a server of dates-additive (batched by request) and dates-dot
    (by iteration), so that every batching panel has data, scraped every second."""
    work = tmp_path_factory.mktemp("prometheus")
    for model in PROMETHEUS_MODELS:
        shutil.copytree(reference_repository / model, work / "repo" / model)
    config_path = work / "repo" / PROMETHEUS_ITERATION_MODEL / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**config, "decode_batching": "iteration"}, sort_keys=False))
    srv = start_server(work / "repo", models=PROMETHEUS_MODELS)
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", work / "rules.yml")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{srv.app.metrics_port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    processes = Processes()
    processes.popen(
        [prometheus_binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base), "the scrape target to be up", interval=0.5)
        yield srv, base
    finally:
        processes.stop_all()
        srv.stop()


def _up(base: str) -> bool:
    try:
        return any(r["value"][1] == "1" for r in query(base, "up"))
    except OSError:
        return False
