"""`attnserve stats`: live p50/p95/p99 per model, attention, backend and stage from /metrics."""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

QUANTILES = (0.5, 0.95, 0.99)
KEY = ("model", "attention", "backend", "stage")


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative (upper bound, count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 0)
        prev_bound, prev_count = bound, count
    return prev_bound


def collect(text: str) -> dict[tuple[str, ...], dict[str, float]]:
    """(model, attention, backend, stage) -> {"count", "p50", "p95", "p99"} for request and stage durations."""
    series: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        if family.name not in ("attnserve_request_duration_seconds", "attnserve_compute_duration_seconds"):
            continue
        for s in family.samples:
            if s.name.endswith("_bucket") and s.labels.get("model"):
                stage = s.labels.get("stage", "request")
                key: tuple[str, ...] = (
                    s.labels["model"],
                    s.labels.get("attention", ""),
                    s.labels.get("backend", ""),
                    stage,
                )
                series[key].append((float(s.labels["le"]), s.value))
    rows: dict[tuple[str, ...], dict[str, float]] = {}
    for key, buckets in sorted(series.items()):
        merged: dict[float, float] = defaultdict(float)
        for bound, count in buckets:  # several versions/devices of one model: add them up
            merged[bound] += count
        pairs = sorted(merged.items())
        rows[key] = {"count": pairs[-1][1], **{f"p{round(q * 100)}": histogram_quantile(q, pairs) for q in QUANTILES}}
    return rows


def format_rows(rows: dict[tuple[str, ...], dict[str, float]]) -> str:
    head = f"{'model':<22} {'attention':<11} {'backend':<12} {'stage':<12} {'count':>7}"
    lines = [head + "".join(f" {q:>9}" for q in ("p50 ms", "p95 ms", "p99 ms"))]
    for (model, attention, backend, stage), r in rows.items():
        ms = [f"{r[k] * 1e3:>9.3f}" for k in ("p50", "p95", "p99")]
        lines.append(f"{model:<22} {attention:<11} {backend:<12} {stage:<12} {int(r['count']):>7} {' '.join(ms)}")
    return "\n".join(lines)


def fetch(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode("utf-8")
