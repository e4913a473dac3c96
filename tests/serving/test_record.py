"""RecordSink: one request record feeds the Triton statistics and the Prometheus series alike."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from runtime.errors import BackendFailure, ErrorCode, InvalidInput, ModelNotFound, ModelUnavailable
from serving.metrics import ServingMetrics, TritonCompatCollector
from serving.record import CODES, RecordSink, RequestRecord, code_of
from serving.scheduler import Execution
from serving.stats import StatsRegistry

MODEL = {"model": "dates-additive", "version": "1", "attention": "additive", "backend": "onnxruntime", "device": "cpu"}


@pytest.fixture
def sink() -> RecordSink:
    return RecordSink(StatsRegistry(), ServingMetrics(CollectorRegistry()))


def served(**marks: int) -> RequestRecord:
    return RequestRecord("dates-additive", marks.pop("arrived", 1_000), model="dates-additive", version=1,
                         attention="additive", backend="onnxruntime", device="cpu", **marks)  # fmt: skip


def sample(sink: RecordSink, name: str, **labels: str) -> float:
    return sink.metrics.registry.get_sample_value(name, labels) or 0.0


def requests_by_code(sink: RecordSink, model: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for family in sink.metrics.requests.collect():
        for s in family.samples:
            if s.name == "attnserve_requests_total" and s.labels["model"] == model and s.value:
                found[s.labels["code"]] = found.get(s.labels["code"], 0) + int(s.value)
    return found


def stats_by_code(sink: RecordSink, model: str, version: int) -> dict[str, int]:
    s = sink.stats.snapshot()[(model, version)]
    found = {code: d.count for code, d in s.failures.items()}
    if s.success.count:
        found["OK"] = s.success.count
    return found


def test_a_success_is_split_into_triton_stages_and_observed_once(sink: RecordSink):
    record = served(arrived=1_000, queued=1_500, started=2_000, finished=7_000, done=8_000, batch=2)
    series = record.series = sink.metrics.series(record.labels())
    calls: list = []
    timed = series.timed({"encoder": lambda f: f, "decoder_step": lambda f: f}, calls)
    timed["encoder"]({})
    timed["decoder_step"]({})
    encode, step = calls[0][0], calls[1][0]
    record.calls = [(encode, 3_000, 5_000, 10), (step, 5_500, 6_000, 4)]  # fixed marks: exact sums below
    sink.write(record)

    s = sink.stats.snapshot()[("dates-additive", 1)]
    assert (s.success.count, s.success.ns, s.fail.count) == (1, 7_000, 0)
    assert (s.queue.ns, s.compute_input.ns, s.compute_infer.ns, s.compute_output.ns) == (500, 1_000, 3_000, 2_000)
    assert sample(sink, "attnserve_requests_total", **MODEL, code="OK") == 1
    assert sample(sink, "attnserve_request_duration_seconds_sum", **MODEL) == pytest.approx(7e-6)
    assert sample(sink, "attnserve_queue_duration_seconds_sum", **MODEL) == pytest.approx(5e-7)
    # the batch it ran in is written once, by its execution: here 3 items (another request's too)
    assert (s.inference_count, s.execution_count) == (0, 0)
    sink.write_execution("dates-additive", 1, series, Execution(3, 2, 2_000, 7_000, record.calls))
    s = sink.stats.snapshot()[("dates-additive", 1)]
    assert (s.inference_count, s.execution_count, s.batch_sizes[3].ns) == (3, 1, 3_000)
    assert sample(sink, "attnserve_compute_duration_seconds_sum", **MODEL, stage="encode") == pytest.approx(2e-6)
    assert sample(sink, "attnserve_decode_steps_sum", **MODEL) == 1
    assert sample(sink, "attnserve_flops_total", **MODEL) == 14  # its calls' FLOPs, once per batch
    assert (
        sample(sink, "attnserve_batch_size_sum", **MODEL) == 3
        and sample(sink, "attnserve_batch_size_count", **MODEL) == 1
    )


def test_a_pipeline_without_component_calls_spends_its_run_on_input():
    record = served(queued=1_500, started=2_000, finished=7_000, done=8_000)
    assert record.stages() == (500, 5_000, 0, 1_000)


def test_every_failure_is_counted_in_both_under_its_code(sink: RecordSink):
    ok = served(queued=1_100, started=1_200, finished=1_300, done=1_400, batch=1)
    sink.write(ok)
    for code, n in (("INVALID_ARGUMENT", 3), ("INTERNAL", 2), ("NOT_FOUND", 1), ("CANCELLED", 1)):
        for _ in range(n):
            sink.write(served(done=2_000, code=code))
    assert requests_by_code(sink, "dates-additive") == stats_by_code(sink, "dates-additive", 1) == {
        "OK": 1, "INVALID_ARGUMENT": 3, "INTERNAL": 2, "NOT_FOUND": 1, "CANCELLED": 1,
    }  # fmt: skip
    s = sink.stats.snapshot()[("dates-additive", 1)]
    assert (s.fail.count, s.fail.ns) == (7, 7 * 1_000)
    assert s.success.count == 1 and s.queue.count == 1  # failures add no stage time, as in Triton
    assert sample(sink, "attnserve_request_failures_total", model="dates-additive", code="INTERNAL") == 2


def test_records_without_a_served_version_reach_prometheus_only(sink: RecordSink):
    sink.write(RequestRecord("no-such-model", 1_000, done=2_000, code="NOT_FOUND"))  # model="" (not served)
    sink.write(RequestRecord("unloaded", 1_000, model="unloaded", done=2_000, code="UNAVAILABLE"))
    assert requests_by_code(sink, "") == {"NOT_FOUND": 1}
    assert requests_by_code(sink, "unloaded") == {"UNAVAILABLE": 1}
    assert sink.stats.snapshot() == {}
    labels = {s.labels["version"] for f in sink.metrics.requests.collect() for s in f.samples}
    assert labels == {""}


def test_status_codes_of_exceptions_come_from_a_closed_set():
    assert code_of(InvalidInput("x")) == "INVALID_ARGUMENT"
    assert code_of(ModelNotFound("x")) == "NOT_FOUND"
    assert code_of(ModelUnavailable("x")) == "UNAVAILABLE"
    assert code_of(BackendFailure("x")) == "INTERNAL"
    assert code_of(asyncio.CancelledError()) == "CANCELLED"
    assert code_of(IndexError("a bug")) == "INTERNAL"  # what the interceptor answers
    assert code_of(np.linalg.LinAlgError("x")) == "INTERNAL"
    assert set(CODES) == {"OK", *(c.name for c in ErrorCode), "CANCELLED", "DEADLINE_EXCEEDED"}
    assert len(CODES) == len(set(CODES))


def test_triton_failure_reasons_add_up_to_the_failures(sink: RecordSink):
    for code in ("INVALID_ARGUMENT", "INTERNAL", "INTERNAL", "CANCELLED", "DEADLINE_EXCEEDED"):
        sink.write(served(done=2_000, code=code))
    collector = TritonCompatCollector(sink.stats, dict)
    failures = {
        s.labels["reason"]: s.value
        for f in collector.collect()
        if f.name == "nv_inference_request_failure"
        for s in f.samples
    }
    assert failures == {"OTHER": 1, "BACKEND": 2, "CANCELED": 1, "REJECTED": 1}
