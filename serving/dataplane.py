"""The transport-neutral request path: find the model, run its pipeline in a worker thread, record it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from runtime.errors import InvalidInput
from runtime.pipelines.base import Pipeline
from runtime.variants import attention_label
from serving.metrics import ModelLabels, ServingMetrics
from serving.record import RecordSink, RequestRecord, code_of
from serving.repository import LoadedVersion, ModelRepository
from serving.stats import StatsRegistry
from serving.tracing import RequestTracer

_T = TypeVar("_T")


@dataclass
class InferResult:
    model: LoadedVersion
    backend: str
    outputs: dict[str, np.ndarray]


def labels_of(model: LoadedVersion, backend: str) -> ModelLabels:
    cfg = model.config
    return ModelLabels(cfg.name, str(model.version), attention_label(cfg.attention), backend, cfg.device)


class Tracking:
    """The context of one request: on exit, the record gets its end time and status code, and is
    accounted as the loop's next callback (after gRPC has the response, off the request's path)."""

    __slots__ = ("_account", "record")

    def __init__(self, record: RequestRecord, account: Callable[[RequestRecord], None]) -> None:
        self.record = record
        self._account = account

    def __enter__(self) -> RequestRecord:
        return self.record

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        record = self.record
        record.done = time.perf_counter_ns()
        if exc is not None:
            record.code = code_of(exc)  # the exception propagates: the interceptor answers it
        # Any later RPC, ModelStatistics included, is handled after this (the loop runs FIFO).
        asyncio.get_running_loop().call_soon(self._account, record)


class DataPlane:
    """Runs inference requests; the gRPC servicers only convert to and from protobuf.

    Every request is counted once, by its RequestRecord, in both the Triton statistics and
    the Prometheus series (`RecordSink`). A failure that never resolved a model version (a
    malformed request, an unknown version or backend) of a model the server serves counts under
    that model's current version, the one a request without a version gets; a name the server
    does not serve counts under model="" in Prometheus only. The client's version string is never
    a label.
    """

    def __init__(
        self,
        repository: ModelRepository,
        executor: ThreadPoolExecutor,
        stats: StatsRegistry,
        metrics: ServingMetrics,
        inline_when_idle: bool = True,
        tracer: RequestTracer | None = None,
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.stats = stats
        self.metrics = metrics
        self.sink = RecordSink(stats, metrics)
        self.inline_when_idle = inline_when_idle
        self.tracer = tracer  # None: tracing is off (serving.tracing)
        self._computing = 0  # pipelines running now; touched only on the event loop thread

    def track(self, name: str) -> Tracking:
        """Open the record of a request for model `name`, arriving now, as a context manager.

        Transports wrap the whole request in it (decoding, `infer`, the response), so a failure
        anywhere, of any kind, is counted with its status code.
        """
        record = RequestRecord(name, time.perf_counter_ns())
        if self.tracer is not None:
            record.trace = self.tracer.capture()
        return Tracking(record, self._account)

    def pipeline(self, name: str, version: str) -> Pipeline:
        """The pipeline that serves (name, version), for checks before a request's data is decoded
        (Pipeline.check_headers, Pipeline.max_item_bytes); NOT_FOUND / UNAVAILABLE when none does."""
        return self.repository.get(name, version).pipeline

    async def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str] = (),
        *,
        record: RequestRecord | None = None,
    ) -> InferResult:
        """Run one request. `requested` names outputs to return (empty: all of them).

        `record` is the transport's (see `track`); without one, the request is tracked here.
        """
        if record is None:
            with self.track(name) as record:
                return await self.infer(name, version, inputs, params, requested, record=record)
        # held until the pipeline is done: a swap or unload closes it only after that
        model = self.repository.acquire(name, version)
        try:
            _served_by(record, model)
            backend = params.get("backend")
            if backend is not None and not isinstance(backend, str):
                raise InvalidInput(f"parameter 'backend' must be a string, got {backend!r}")
            backend_name, runners = model.runners(backend)
            record.backend = backend_name
            series = record.series = self.metrics.series(record.labels())
            series.inflight.inc()
            try:
                return await self._run(record, model, series.timed(runners, record.calls), inputs, params, requested)
            finally:
                series.inflight.dec()
        finally:
            model.release()

    async def _run(
        self,
        record: RequestRecord,
        model: LoadedVersion,
        timed: dict[str, Any],
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str],
    ) -> InferResult:
        requested = list(requested)
        known = [t.name for t in model.pipeline.outputs]
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise InvalidInput(f"model '{model.config.name}' has no output(s) {unknown}; it offers {known}")
        if len(set(requested)) != len(requested):
            raise InvalidInput(f"output(s) requested twice: {requested}")
        batch = record.batch = _batch_size(inputs)

        def work() -> dict[str, np.ndarray]:
            record.started = time.perf_counter_ns()
            outputs = model.pipeline.run(inputs, params, timed)
            record.finished = time.perf_counter_ns()
            return outputs

        self._computing += 1
        record.queued = time.perf_counter_ns()
        try:
            if self.inline_when_idle and self._computing == 1 and batch <= 1:
                # A single item and nothing else computing: run on the loop and skip two thread
                # hand-offs (about 0.2 ms). The loop is blocked for one batch-1 pipeline (a few
                # ms); batches go to the worker threads so health checks and signals stay prompt.
                outputs = work()
            else:
                outputs = await self._in_worker(model, work)
        finally:
            self._computing -= 1
        selected = {k: outputs[k] for k in requested} if requested else outputs
        return InferResult(model=model, backend=record.backend, outputs=selected)

    async def _in_worker(self, model: LoadedVersion, work: Callable[[], _T]) -> _T:
        """Run `work` on a worker thread under its own hold of `model`: a cancelled request
        (deadline, client gone) stops waiting, but the thread may still be running the backends."""
        model.acquire()
        future = self.executor.submit(work)
        future.add_done_callback(lambda _: model.release())
        return await asyncio.wrap_future(future)

    def _account(self, record: RequestRecord) -> None:
        """Resolve the labels of a request that failed before finding its model, then write it."""
        if record.version is None and record.name:
            entry = self.repository.entry(record.name)
            if entry is not None:
                record.model = entry.name
                versions = entry.versions
                if versions:  # the current version: the one a request without a version gets
                    _served_by(record, versions[max(versions)])
        self.sink.write(record)
        if self.tracer is not None:
            self.tracer.export(record)


def _served_by(record: RequestRecord, model: LoadedVersion) -> None:
    cfg = model.config
    attention = attention_label(cfg.attention)  # a registered variant or "other": no config makes label values
    record.model, record.version, record.attention, record.device = cfg.name, model.version, attention, cfg.device


def _batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0
