"""A real Prometheus scrapes the real server: exact counts, quantiles per attention, every rule and panel."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from tests.serving.conftest import ROOT, start_server

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed here (.ci/run installs Debian's package)"
)
MODELS = ["dates-additive", "dates-dot"]
ITERATION_MODEL = "dates-dot"
SENT = {("dates-additive", "onnxruntime"): 7, ("dates-additive", "torch"): 4,
        ("dates-dot", "onnxruntime"): 5, ("dates-dot", "torch"): 3}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(check, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(reference_repository: Path, tmp_path_factory):
    work = tmp_path_factory.mktemp("prometheus")
    # dates-additive batches by request, dates-dot decodes by iteration: every batching panel has data
    for model in MODELS:
        shutil.copytree(reference_repository / model, work / "repo" / model)
    config_path = work / "repo" / ITERATION_MODEL / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**config, "decode_batching": "iteration"}, sort_keys=False))
    srv = start_server(work / "repo", models=MODELS)
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", work / "rules.yml")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{srv.app.metrics_port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), what="the scrape target to be up")
        yield srv, base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        srv.stop()


def _up(base: str) -> bool:
    try:
        return any(r["value"][1] == "1" for r in query(base, "up"))
    except OSError:
        return False


def send(address: str, plan: dict[tuple[str, str], int]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for (model, backend), n in plan.items():
            for i in range(n):
                req = pb.ModelInferRequest(model_name=model)
                req.inputs.add(name="text", datatype="BYTES", shape=[1])
                text = f"{i + 1}. September 1983".encode()
                req.raw_input_contents.append(serialize_bytes(np.array([text], dtype=np.object_)))
                req.parameters["backend"].string_param = backend
                stub.ModelInfer(req, timeout=30)


def test_counts_quantiles_rules_and_dashboard(stack):
    srv, base = stack

    def counts_equal(expected: dict[tuple[str, str], int]) -> bool:
        rows = query(base, 'sum by (model, backend) (attnserve_requests_total{code="OK"})')
        return {(r["metric"]["model"], r["metric"]["backend"]): int(float(r["value"][1])) for r in rows} == expected

    # One request each first, scraped, so that every series exists before the counted ones:
    # rate() sees no increase in a series' first sample.
    warm = dict.fromkeys(SENT, 1)
    send(srv.address, warm)
    wait_for(lambda: counts_equal(warm), what="the warm-up requests")
    send(srv.address, SENT)
    expected = {k: n + 1 for k, n in SENT.items()}
    wait_for(lambda: counts_equal(expected), what=f"request counts {expected}")
    expr = "histogram_quantile(0.99, sum by (le, attention) (rate(attnserve_request_duration_seconds_bucket[1m])))"

    def p99() -> dict | None:  # rate() needs two scrapes after the requests before it is finite
        got = {r["metric"]["attention"]: float(r["value"][1]) for r in query(base, expr)}
        return got if got and all(math.isfinite(v) and v > 0 for v in got.values()) else None

    by_attention = wait_for(p99, what="p99 per attention")
    assert set(by_attention) == {"additive", "dot"}

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    exprs += [r["record"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "attnserve-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # error panel: make one failing request so that series exists too
    bad = grpc.insecure_channel(srv.address)
    with pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(bad).ModelInfer(pb.ModelInferRequest(model_name="dates-dot"), timeout=10)
    bad.close()
    for expr in exprs:
        wait_for(lambda e=expr: _has_data(base, e), timeout=30, what=f"data for {expr}")


def _has_data(base: str, expr: str) -> bool:
    """Some series, with at least one finite value (a quantile over an idle window is NaN)."""
    return any(math.isfinite(float(r["value"][1])) for r in query(base, expr))
