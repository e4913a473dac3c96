"""One record per inference request, the single source of Triton statistics and the Prometheus series.

A transport opens a record when a request arrives (`DataPlane.track`); the data plane fills in
the model, the stage timestamps and the batch size as the request goes; whatever ends the
request sets its status code. `RecordSink.write` then updates the StatsRegistry (ModelStatistics,
the optional nv_inference_* names) and the attnserve_* collectors from that one record, so the
two count the same requests under the same codes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import ErrorCode, ServingError
from serving.metrics import ModelLabels, ModelSeries, ServingMetrics
from serving.scheduler import Calls, Execution
from serving.stats import StatsRegistry

OK = "OK"
CANCELLED = "CANCELLED"  # the client cancelled the call (or it was dropped) before the answer
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # its deadline passed before the answer (dropped unrun if queued)
# The closed set of status codes a record (and the `code` label) can carry.
CODES: tuple[str, ...] = tuple(dict.fromkeys([OK, *(c.name for c in ErrorCode), CANCELLED, DEADLINE_EXCEEDED]))


def code_of(exc: BaseException) -> str:
    """The status code of a request that ended with `exc`.

    A ServingError's own code; CANCELLED for a cancelled call; anything else is INTERNAL, as the
    gRPC interceptor answers it.
    """
    if isinstance(exc, ServingError):
        return exc.code.name
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    return ErrorCode.INTERNAL.name


@dataclass(slots=True, eq=False)
class RequestRecord:
    """What one request did. Timestamps are `time.perf_counter_ns()`; 0 marks a stage not reached.

    Stages (Triton's names): queue = queued -> started (waiting in its model's queue); compute_input =
    `prepare` (validation, preprocessing, before the queue) + started -> first component call (the
    padded batch's inputs); compute_infer = first call ->
    end of the last call (the components and the decode loop between them); compute_output =
    end of the last call -> done (postprocessing, output selection, the response message).
    """

    name: str  # the model name the client sent: never a label by itself
    arrived: int
    model: str = ""  # labels, filled once the request resolved a model version ("" = not served)
    version: int | None = None
    attention: str = ""
    backend: str = ""
    device: str = ""
    series: ModelSeries | None = None  # the collectors bound once for (model, version, backend)
    batch: int = 0  # the request's items (its batch may hold other requests' too)
    prepare: int = 0  # ns spent validating and preprocessing it, before it was queued
    queued: int = 0
    started: int = 0
    finished: int = 0  # the pipeline returned
    done: int = 0  # the response is built, or the request failed
    # (stage child, start, end, FLOPs) per component call of the batch the request ran in
    calls: list[tuple[Any, int, int, int]] = field(default_factory=list)
    code: str = OK
    trace: Any = None  # the transport's trace context (serving.tracing.Incoming) when tracing is on

    @property
    def ok(self) -> bool:
        return self.code == OK

    def labels(self) -> ModelLabels:
        version = "" if self.version is None else str(self.version)
        return ModelLabels(self.model, version, self.attention, self.backend, self.device)

    def stages(self) -> tuple[int, int, int, int]:
        """(queue, compute_input, compute_infer, compute_output) in ns, of a request that completed."""
        if self.calls:
            first, last = self.calls[0][1], self.calls[-1][2]
        else:  # a pipeline that called no component: all of its run is input preparation
            first = last = self.finished
        return self.started - self.queued, self.prepare + first - self.started, last - first, self.done - last


class RecordSink:
    """Writes each finished record to the StatsRegistry and the Prometheus collectors.

    Prometheus counts every record: under model="" when the name is not one the server serves,
    under the model and its labels otherwise. Triton statistics are kept per served version, so
    a record reaches the StatsRegistry when it has a version: the data plane gives a failure
    that never resolved one the model's current version (`DataPlane` documents the rule); only
    requests for names without a serving version have no ModelStatistics row to count in.

    An executed batch (one or more requests computed together) is written once, by
    `write_execution`: Triton's execution and inference counts, the batch size, the component
    calls and decoder steps. The decoder steps of an iteration-level decode batch are written by
    `write_steps` (serving.scheduler.iteration says what an execution is there).
    """

    def __init__(self, stats: StatsRegistry, metrics: ServingMetrics) -> None:
        self.stats = stats
        self.metrics = metrics

    def write(self, record: RequestRecord) -> None:
        total = record.done - record.arrived
        if record.ok:
            stages = record.stages()
            series = record.series or self.metrics.series(record.labels())
            series.observe(total / 1e9, stages[0] / 1e9)
            if record.version is not None:
                self.stats.record(record.model, record.version, OK, total, *stages)
            return
        self.metrics.observe_failure(record.labels(), record.code, total / 1e9)
        if record.version is not None:
            self.stats.record(record.model, record.version, record.code, total)

    def write_execution(self, model: str, version: int, series: ModelSeries, execution: Execution) -> None:
        calls = execution.calls
        infer = calls[-1][2] - calls[0][1] if calls else 0  # Triton's compute_infer of the batch
        self.stats.record_execution(model, version, execution.rows, infer)
        series.observe_execution(execution.rows, calls)

    def write_steps(self, series: ModelSeries, rows: list[int], calls: Calls) -> None:
        """Decoder steps of a running decode batch: the rows in each (occupancy) and its duration."""
        series.observe_steps(rows, calls)
