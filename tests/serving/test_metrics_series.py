"""ModelSeries: the per-request and per-executed-batch metrics paths, bound once per model version and backend."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from runtime.flops import CallCounter, ComponentFlops, Polynomial, Term
from runtime.tensors import TensorSpec
from serving.metrics import ModelLabels, ServingMetrics

LABELS = ModelLabels("dates-additive", "1", "additive", "onnxruntime", "cpu")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {**LABELS._asdict(), **labels}) or 0.0


def runner(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": feeds["x"] + 1}


def test_component_calls_are_observed_once_per_executed_batch_with_their_stage():
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    series = metrics.series(LABELS)
    calls: list = []
    timed = series.timed({"encoder": runner, "decoder_step": runner, "custom": runner}, calls)
    x = {"x": np.zeros(2)}
    timed["encoder"](x)
    for _ in range(3):
        timed["decoder_step"](x)
    timed["custom"](x)
    assert len(calls) == 5
    assert value(registry, "attnserve_compute_duration_seconds_count", stage="decode_step") == 0  # not yet

    assert series.observe_execution(5, calls) == 3  # one batch of 5 items (several requests)
    assert value(registry, "attnserve_compute_duration_seconds_count", stage="encode") == 1
    assert value(registry, "attnserve_compute_duration_seconds_count", stage="decode_step") == 3
    assert value(registry, "attnserve_compute_duration_seconds_count", stage="custom") == 1
    assert value(registry, "attnserve_decode_steps_sum") == 3
    assert value(registry, "attnserve_batch_size_sum") == 5 and value(registry, "attnserve_batch_size_count") == 1
    assert value(registry, "attnserve_requests_total", code="OK") == 0  # requests are counted one by one

    series.observe(0.002, 0.0005)
    series.observe(0.003, 0.001)
    assert value(registry, "attnserve_requests_total", code="OK") == 2
    assert value(registry, "attnserve_request_duration_seconds_sum") == 0.005
    assert value(registry, "attnserve_queue_duration_seconds_sum") == 0.0015


def test_a_classifier_records_no_decode_steps():
    registry = CollectorRegistry()
    series = ServingMetrics(registry).series(LABELS)
    calls: list = []
    series.timed({"classify": runner}, calls)["classify"]({"x": np.zeros(1)})
    assert series.observe_execution(1, calls) == 0
    assert value(registry, "attnserve_decode_steps_count") == 0
    assert value(registry, "attnserve_compute_duration_seconds_count", stage="classify") == 1


def test_a_failing_component_call_is_still_timed():
    registry = CollectorRegistry()
    series = ServingMetrics(registry).series(LABELS)
    calls: list = []

    def broken(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        series.timed({"encoder": broken}, calls)["encoder"]({})
    assert len(calls) == 1 and calls[0][2] >= calls[0][1] > 0


def test_series_are_bound_once_and_forgotten_with_their_model():
    metrics = ServingMetrics(CollectorRegistry())
    first = metrics.series(LABELS)
    assert metrics.series(LABELS) is first
    assert metrics.series(LABELS._replace(backend="torch")) is not first
    metrics.forget_model("dates-additive")
    assert metrics.series(LABELS) is not first


def test_the_flops_of_component_calls_are_counted_once_per_batch_and_step():
    registry = CollectorRegistry()
    series = ServingMetrics(registry).series(LABELS)
    per_row = Polynomial(axes=("batch",), terms=(Term(coef=7, powers={"batch": 1}),))
    counters = {"encoder": CallCounter(ComponentFlops(total=per_row), (TensorSpec.of("x", "float32", "batch"),))}
    calls: list = []
    timed = series.timed({"encoder": runner, "decoder_step": runner}, calls, counters)
    timed["encoder"]({"x": np.zeros(3)})
    timed["decoder_step"]({"x": np.zeros(3)})  # no counter: 0 FLOPs
    assert [c[3] for c in calls] == [21, 0]
    assert value(registry, "attnserve_flops_total") == 0  # not inside the decode loop
    series.observe_execution(3, calls)
    assert value(registry, "attnserve_flops_total") == 21
    series.observe_steps([3], calls[:1])
    assert value(registry, "attnserve_flops_total") == 42
