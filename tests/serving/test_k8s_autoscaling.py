"""The autoscaling queries of deploy/k8s answer on a real Prometheus scraping a real server: the
prometheus-adapter rules behind the HPA (per pod: here the scrape's instance plays the pod) and
the KEDA ScaledObject's query."""

from __future__ import annotations

import math
import time

import yaml

from tests.helpers.k8s import adapter_query, adapter_rules
from tests.helpers.metrics import query
from tests.helpers.paths import K8S
from tests.helpers.server import send_dates
from tests.helpers.wait import wait_until


def _rows(base: str, expr: str) -> list[tuple[dict, float]] | None:
    rows = [(r["metric"], float(r["value"][1])) for r in query(base, expr)]
    return rows if rows and all(math.isfinite(v) for _, v in rows) else None


def _scraped_since(base: str, since: float) -> bool:
    """Prometheus holds a scrape of the server that started after `since` (Unix seconds)."""
    return any(float(r["value"][1]) > since for r in query(base, 'timestamp(up{job="attnserve"})'))


def test_adapter_and_keda_queries_answer_per_replica(stack):
    srv, base = stack
    send_dates(srv.address, {("dates-additive", "onnxruntime"): 3, ("dates-dot", "onnxruntime"): 2})
    # a scrape taken while those requests ran saw them in flight: read the values of one taken after
    sent = time.time()
    wait_until(lambda: _scraped_since(base, sent), "a scrape after the requests", timeout=30, interval=0.5)
    values = {}
    for rule in adapter_rules():
        expr = adapter_query(rule, 'job="attnserve"', "instance")
        rows = wait_until(lambda e=expr: _rows(base, e), f"data for {expr}", timeout=60, interval=0.5)
        assert len(rows) == 1 and set(rows[0][0]) == {"instance"}, rows  # one value per replica
        values[rule["name"]["as"]] = rows[0][1]
    assert values["attnserve_inflight_requests"] == 0  # every request has finished
    assert 0 <= values["attnserve_queue_seconds_per_request"] < 10

    scaled = yaml.safe_load((K8S / "components" / "keda" / "scaledobject.yaml").read_text())
    (trigger,) = scaled["spec"]["triggers"]
    expr = trigger["metadata"]["query"].replace('namespace="attnserve"', 'job="attnserve"')
    assert expr != trigger["metadata"]["query"]
    rows = wait_until(lambda: _rows(base, expr), f"data for {expr}", timeout=30, interval=0.5)
    assert [v for _, v in rows] == [0]
