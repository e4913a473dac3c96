"""Prometheus metrics on an injected CollectorRegistry (no module-level collectors).

Histograms in seconds (they aggregate across replicas; summaries do not), labels from a closed
set: model, version, attention, backend, device, stage, code. A request naming a model the
server does not serve is counted under model="" so client input never creates series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, UnknownMetricFamily
from prometheus_client.registry import Collector

from runtime.decode import Runner
from runtime.flops import CallCounter
from serving.stats import StatsRegistry

# 0.25 ms to 10 s, about x2 apart, with common SLO edges (1, 5, 10, 50, 100 ms, 1 s) included.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
STEP_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 11, 16, 24, 32, 48, 64)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
STEP_ROW_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)  # beams make rows
MODEL_LABELS = ("model", "version", "attention", "backend", "device")
STAGES = {"encoder": "encode", "decoder_step": "decode_step", "classify": "classify"}
# Triton's failure reasons (nv_inference_request_failure) for our status codes; any other is OTHER.
TRITON_REASONS = {"RESOURCE_EXHAUSTED": "REJECTED", "DEADLINE_EXCEEDED": "REJECTED", "CANCELLED": "CANCELED",
                  "INTERNAL": "BACKEND"}  # fmt: skip


class ModelLabels(NamedTuple):
    """The label values of one model version on one backend (a tuple: cheap to build and hash)."""

    model: str
    version: str
    attention: str
    backend: str
    device: str

    def values(self) -> tuple[str, ...]:
        return tuple(self)


UNKNOWN = ModelLabels("", "", "", "", "")


@dataclass
class ModelSeries:
    """Pre-bound collectors of one model version on one backend: the hot path of every request."""

    requests_ok: Any  # children of Counter / Histogram / Gauge
    request_duration: Any
    queue_duration: Any
    batch_size: Any
    decode_steps: Any
    step_rows: Any
    inflight: Any
    flops: Any
    compute_duration: Histogram  # the parent; a stage's child is bound on its first call
    values: tuple[str, ...]
    stages: dict[str, Any] = field(default_factory=dict)  # component -> child of its stage

    def timed(
        self,
        runners: Mapping[str, Runner],
        calls: list[tuple[Any, int, int, int]],
        counters: Mapping[str, CallCounter] | None = None,
    ) -> dict[str, Runner]:
        """Wrap component runners so each call appends (its stage's child, start ns, end ns, FLOPs)
        to `calls`; FLOPs from `counters` (runtime.flops), 0 for a component without one.

        The histograms and the FLOPs counter are updated once per executed batch, in
        `observe_execution`, not inside the decode loop.
        """
        counters = counters or {}
        return {comp: _timed(runner, self._stage(comp), calls, counters.get(comp)) for comp, runner in runners.items()}

    def observe(self, seconds: float, queue_seconds: float) -> None:
        """Record a successful request: its duration and the time it waited to be computed."""
        self.requests_ok.inc()
        self.request_duration.observe(seconds)
        self.queue_duration.observe(queue_seconds)

    def observe_execution(self, rows: int, calls: list[tuple[Any, int, int, int]]) -> int:
        """Record one executed batch: its items and its component calls; returns the decoder steps."""
        step = self.stages.get("decoder_step")
        steps = flops = 0
        for child, start, end, n in calls:
            child.observe((end - start) / 1e9)
            steps += child is step
            flops += n
        if flops:
            self.flops.inc(flops)
        self.batch_size.observe(rows)
        if steps:
            self.decode_steps.observe(steps)
        return steps

    def observe_steps(self, rows: Sequence[int], calls: Sequence[tuple[Any, int, int, int]]) -> None:
        """Record decoder steps of an iteration-level decode batch: the rows of each, and its call."""
        flops = 0
        for n, (child, start, end, call_flops) in zip(rows, calls, strict=True):
            child.observe((end - start) / 1e9)
            self.step_rows.observe(n)
            flops += call_flops
        if flops:
            self.flops.inc(flops)

    def _stage(self, component: str) -> Any:
        child = self.stages.get(component)
        if child is None:
            stage = STAGES.get(component, component)
            child = self.stages[component] = self.compute_duration.labels(*self.values, stage)
        return child


def _timed(runner: Runner, child: Any, calls: list[tuple[Any, int, int, int]], counter: CallCounter | None) -> Runner:
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter_ns()
        try:
            return runner(feeds)
        finally:
            calls.append((child, t0, time.perf_counter_ns(), _flops(counter, feeds)))

    return run


def _flops(counter: CallCounter | None, feeds: dict[str, np.ndarray]) -> int:
    """The call's FLOPs; 0 for feeds the counter cannot read (the backend reports what is wrong with them)."""
    if counter is None:
        return 0
    try:
        return counter(feeds)
    except (KeyError, IndexError, AttributeError):
        return 0


class ServingMetrics:
    """Every attnserve_* collector, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.registry = registry
        kw: dict[str, Any] = {"registry": registry}
        self.request_duration = Histogram(
            "attnserve_request_duration_seconds",
            "Server-side duration of an inference request, from arrival to response.",
            MODEL_LABELS, buckets=buckets, **kw,
        )  # fmt: skip
        self.queue_duration = Histogram(
            "attnserve_queue_duration_seconds",
            "Time a request waited in its model's queue before its batch started computing.",
            MODEL_LABELS, buckets=buckets, **kw,
        )  # fmt: skip
        self.compute_duration = Histogram(
            "attnserve_compute_duration_seconds",
            "Duration of one component call (stage: encode, decode_step, classify).",
            (*MODEL_LABELS, "stage"), buckets=buckets, **kw,
        )  # fmt: skip
        self.decode_steps = Histogram(
            "attnserve_decode_steps",
            "Decoder steps run for one executed batch.",
            MODEL_LABELS, buckets=STEP_BUCKETS, **kw,
        )  # fmt: skip
        self.step_rows = Histogram(
            "attnserve_decode_step_rows",
            "Rows (items times beam) in one decoder step of an iteration-level decode batch (its occupancy).",
            MODEL_LABELS, buckets=STEP_ROW_BUCKETS, **kw,
        )  # fmt: skip
        self.batch_size = Histogram(
            "attnserve_batch_size",
            "Items in one executed batch (requests merged by dynamic batching; its count is the executions).",
            MODEL_LABELS,
            buckets=BATCH_BUCKETS,
            **kw,
        )
        self.requests = Counter(
            "attnserve_requests", "Inference requests by status code.", (*MODEL_LABELS, "code"), **kw
        )
        self.failures = Counter(
            "attnserve_request_failures", "Failed inference requests by reason (status code).", ("model", "code"), **kw
        )
        self.inflight = Gauge("attnserve_inflight_requests", "Requests being served now.", ("model",), **kw)
        self.refusals = Counter(
            "attnserve_refusals",
            "Calls refused before they ran, by protocol (grpc, http), method (the Open Inference Protocol's "
            "name; unknown for one the server does not serve) and code: UNAUTHENTICATED (no or an unknown "
            "token), PERMISSION_DENIED (a token without the method's scope), FAILED_PRECONDITION (model "
            "control off).",
            ("protocol", "method", "code"), **kw,
        )  # fmt: skip
        self.flops = Counter(
            "attnserve_flops",
            "Floating-point operations computed for inference requests (each component call's, from its graph's "
            "flops.json: 2 per multiply-add; a call counts its rows times one row's).",
            MODEL_LABELS, **kw,
        )  # fmt: skip
        self._series: dict[ModelLabels, ModelSeries] = {}
        self._labelled: dict[str, set[ModelLabels]] = {}  # model -> label sets its series carry
        self.model_ready = Gauge(
            "attnserve_model_ready",
            "1 when the model version serves on this backend; device is the one actually in use "
            "(cpu when ONNX Runtime fell back from CUDA).",
            MODEL_LABELS,
            **kw,
        )

    def series(self, labels: ModelLabels) -> ModelSeries:
        """The children of one model version on one backend, bound once (`labels()` takes a lock)."""
        found = self._series.get(labels)
        if found is None:
            values = labels.values()
            found = ModelSeries(
                requests_ok=self.requests.labels(*values, "OK"),
                request_duration=self.request_duration.labels(*values),
                queue_duration=self.queue_duration.labels(*values),
                batch_size=self.batch_size.labels(*values),
                decode_steps=self.decode_steps.labels(*values),
                step_rows=self.step_rows.labels(*values),
                inflight=self.inflight.labels(labels.model),
                flops=self.flops.labels(*values),
                compute_duration=self.compute_duration,
                values=values,
            )
            self._series[labels] = found
            self._labelled.setdefault(labels.model, set()).add(labels)
        return found

    def observe_failure(self, labels: ModelLabels, code: str, seconds: float) -> None:
        """Count one failed request under its status code (successes go through ModelSeries.observe)."""
        values = labels.values()
        if labels.model:
            self._labelled.setdefault(labels.model, set()).add(labels)
        self.requests.labels(*values, code).inc()
        self.request_duration.labels(*values).observe(seconds)
        self.failures.labels(labels.model, code).inc()

    def count_refusal(self, protocol: str, method: str, code: str) -> None:
        """Count one call refused by access control (labels from closed sets: never a token or a path)."""
        self.refusals.labels(protocol, method, code).inc()

    def set_ready(self, labels: ModelLabels, ready: bool) -> None:
        self._labelled.setdefault(labels.model, set()).add(labels)
        self.model_ready.labels(*labels.values()).set(1 if ready else 0)

    def inflight_by_model(self) -> dict[str, int]:
        """Requests being served now, per model (the attnserve_inflight_requests gauge)."""
        return {s.labels["model"]: int(s.value) for m in self.inflight.collect() for s in m.samples}

    def forget_model(self, model: str, keep: Iterable[ModelLabels] = ()) -> None:
        """Remove the series of `model` but those labelled `keep` (the versions and backends it
        serves now): an unloaded model leaves no series, a reload under other labels no stale ones.
        Series of requests that reached no version (version "") stay while the model is loaded."""
        kept = set(keep)
        known = self._labelled.get(model, set())
        for labels in [k for k in self._series if k.model == model and k not in kept]:
            self._series.pop(labels, None)
        by_model = (self.request_duration, self.queue_duration, self.compute_duration, self.decode_steps,
                    self.step_rows, self.batch_size, self.requests, self.model_ready, self.flops)  # fmt: skip
        if not kept:
            for collector in (*by_model, self.failures, self.inflight):
                collector.remove_by_labels({"model": model})
            self._labelled.pop(model, None)
            return
        stale = {k for k in known if k not in kept and k.version}
        for labels in stale:
            for collector in by_model:
                collector.remove_by_labels(labels._asdict())
        known -= stale


class TritonCompatCollector(Collector):
    """Triton's metric names (nv_inference_*, labels model and version) from the same statistics.

    Exported untyped: prometheus_client would append `_total` to a counter's name, and Triton's
    names have none; PromQL's rate() works on them either way.
    """

    def __init__(self, stats: StatsRegistry, pending: Callable[[], dict[str, int]]) -> None:
        self.stats = stats
        self.pending = pending

    def collect(self) -> Iterator[UnknownMetricFamily | GaugeMetricFamily]:
        labels = ["model", "version"]
        fams = {
            "success": UnknownMetricFamily(
                "nv_inference_request_success", "Successful inference requests", labels=labels
            ),
            "failure": UnknownMetricFamily(
                "nv_inference_request_failure", "Failed inference requests", labels=[*labels, "reason"]
            ),
            "count": UnknownMetricFamily("nv_inference_count", "Inferences performed (batch items)", labels=labels),
            "exec": UnknownMetricFamily("nv_inference_exec_count", "Model executions", labels=labels),
            "request_us": UnknownMetricFamily(
                "nv_inference_request_duration_us", "Cumulative request duration (us)", labels=labels
            ),
            "queue_us": UnknownMetricFamily(
                "nv_inference_queue_duration_us", "Cumulative queue time (us)", labels=labels
            ),
            "input_us": UnknownMetricFamily(
                "nv_inference_compute_input_duration_us", "Cumulative input preparation time (us)", labels=labels
            ),
            "infer_us": UnknownMetricFamily(
                "nv_inference_compute_infer_duration_us", "Cumulative compute time (us)", labels=labels
            ),
            "output_us": UnknownMetricFamily(
                "nv_inference_compute_output_duration_us", "Cumulative output preparation time (us)", labels=labels
            ),
        }
        for (model, version), s in sorted(self.stats.snapshot().items()):
            v = [model, str(version)]
            fams["success"].add_metric(v, s.success.count)
            reasons = dict.fromkeys(("REJECTED", "CANCELED", "BACKEND", "OTHER"), 0)
            for code, d in s.failures.items():
                reasons[TRITON_REASONS.get(code, "OTHER")] += d.count
            for reason, n in reasons.items():
                fams["failure"].add_metric([*v, reason], n)
            fams["count"].add_metric(v, s.inference_count)
            fams["exec"].add_metric(v, s.execution_count)
            fams["request_us"].add_metric(v, (s.success.ns + s.fail.ns) / 1e3)
            fams["queue_us"].add_metric(v, s.queue.ns / 1e3)
            fams["input_us"].add_metric(v, s.compute_input.ns / 1e3)
            fams["infer_us"].add_metric(v, s.compute_infer.ns / 1e3)
            fams["output_us"].add_metric(v, s.compute_output.ns / 1e3)
        yield from fams.values()
        pending = GaugeMetricFamily("nv_inference_pending_request_count", "Requests being served", labels=["model"])
        for model, n in sorted(self.pending().items()):
            pending.add_metric([model], n)
        yield pending
