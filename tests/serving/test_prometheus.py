"""A real Prometheus scrapes the real server: exact counts, quantiles per attention, every rule and panel."""

from __future__ import annotations

import json
import math

import grpc
import pytest
import yaml

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from tests.helpers.metrics import query
from tests.helpers.paths import ROOT
from tests.helpers.server import send_dates
from tests.helpers.wait import wait_until

SENT = {("dates-additive", "onnxruntime"): 7, ("dates-additive", "torch"): 4,
        ("dates-dot", "onnxruntime"): 5, ("dates-dot", "torch"): 3}  # fmt: skip


def test_counts_quantiles_rules_and_dashboard(stack):
    srv, base = stack

    def counts_equal(expected: dict[tuple[str, str], int]) -> bool:
        rows = query(base, 'sum by (model, backend) (attnserve_requests_total{code="OK"})')
        return {(r["metric"]["model"], r["metric"]["backend"]): int(float(r["value"][1])) for r in rows} == expected

    # One request each first, scraped, so that every series exists before the counted ones:
    # rate() sees no increase in a series' first sample.
    warm = dict.fromkeys(SENT, 1)
    send_dates(srv.address, warm)
    wait_until(lambda: counts_equal(warm), "the warm-up requests", interval=0.5)
    send_dates(srv.address, SENT)
    expected = {k: n + 1 for k, n in SENT.items()}
    wait_until(lambda: counts_equal(expected), f"request counts {expected}", interval=0.5)
    expr = "histogram_quantile(0.99, sum by (le, attention) (rate(attnserve_request_duration_seconds_bucket[1m])))"

    def p99() -> dict | None:  # rate() needs two scrapes after the requests before it is finite
        got = {r["metric"]["attention"]: float(r["value"][1]) for r in query(base, expr)}
        return got if got and all(math.isfinite(v) and v > 0 for v in got.values()) else None

    by_attention = wait_until(p99, "p99 per attention", interval=0.5)
    assert set(by_attention) == {"additive", "dot"}

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    # alerts are empty until they fire: deploy/prometheus/rules.test.yml tests them (tests/deploy/test_alerts.py)
    recorded = [r for g in rules["groups"] for r in g["rules"] if "record" in r]
    exprs = [r["expr"] for r in recorded] + [r["record"] for r in recorded]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "attnserve-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # error panel: make one failing request so that series exists too
    bad = grpc.insecure_channel(srv.address)
    with pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(bad).ModelInfer(pb.ModelInferRequest(model_name="dates-dot"), timeout=10)
    # refusal panel: load/unload are refused while model control is off (FAILED_PRECONDITION)
    with pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(bad).RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="dates-dot"), timeout=10
        )
    bad.close()
    for expr in exprs:
        wait_until(lambda e=expr: _has_data(base, e), f"data for {expr}", timeout=30, interval=0.5)


def _has_data(base: str, expr: str) -> bool:
    """Some series, with at least one finite value (a quantile over an idle window is NaN)."""
    return any(math.isfinite(float(r["value"][1])) for r in query(base, expr))
