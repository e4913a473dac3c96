"""The transport-neutral request path: find the model, prepare the request, hand it to its scheduler, time it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import ErrorCode, InvalidInput, ServingError
from serving.metrics import UNKNOWN, ModelLabels, ModelSeries, ServingMetrics
from serving.repository import LoadedVersion, ModelRepository
from serving.scheduler import Done, Execution, Policy, Scheduler, Schedulers
from serving.stats import StatsRegistry

# A client's deadline reaches the server as a cancellation (RST_STREAM), which may come before the
# server's own copy of the deadline by the request's transit time: a cancellation in the last
# quarter of a request's time budget (or its last 2 ms) counts as DEADLINE_EXCEEDED.
DEADLINE_SLACK_S = 0.002
DEADLINE_SLACK_SHARE = 0.25
SMALL_REQUEST_BYTES = 16 * 1024  # larger requests are prepared in a worker thread


@dataclass
class InferResult:
    model: LoadedVersion
    backend: str
    outputs: dict[str, np.ndarray]


def labels_of(model: LoadedVersion, backend: str) -> ModelLabels:
    cfg = model.config
    return ModelLabels(cfg.name, str(model.version), cfg.attention, backend, cfg.device)


class DataPlane:
    """Runs inference requests; the gRPC servicers only convert to and from protobuf.

    Each request is validated and prepared by its model's pipeline, then handed to the
    scheduler of its model version and backend (serving.scheduler), which queues, batches and
    runs it.
    """

    def __init__(
        self,
        repository: ModelRepository,
        executor: ThreadPoolExecutor,
        stats: StatsRegistry,
        metrics: ServingMetrics,
        inline_when_idle: bool = True,
        workers: int = 4,
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.stats = stats
        self.metrics = metrics
        self.inline_when_idle = inline_when_idle
        self.workers = workers
        self.schedulers = Schedulers(self._scheduler)
        self._active = 0  # requests inside infer(); touched only on the event loop thread

    def rejected(self, model_name: str, error: ServingError, seconds: float) -> None:
        """Count a request that failed before it reached a model (e.g. malformed tensors)."""
        entry = self.repository.entry(model_name) if model_name else None
        labels = ModelLabels(model_name, "", "", "", "") if entry is not None else UNKNOWN
        self.metrics.observe_failure(labels, error.code.name, seconds)

    async def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str] = (),
        arrived: float | None = None,
        deadline: float | None = None,
    ) -> InferResult:
        """Run one request. `requested` names outputs to return (empty: all of them); `deadline`
        is the client's, in event-loop time (None: none)."""
        arrived = arrived or time.perf_counter()
        labels = UNKNOWN
        model: LoadedVersion | None = None
        self._active += 1
        try:
            model = self.repository.get(name, version)
            backend = params.get("backend")
            if backend is not None and not isinstance(backend, str):
                raise InvalidInput(f"parameter 'backend' must be a string, got {backend!r}")
            backend_name, _ = model.runners(backend)  # InvalidInput for a backend it does not run on
            labels = labels_of(model, backend_name)
            series = self.metrics.series(labels)
            series.inflight.inc()
            try:
                scheduler = self.schedulers.get(model, backend_name)
                limit = scheduler.deadline(deadline, _timeout(params), asyncio.get_running_loop().time())
                return await self._run(
                    model, backend_name, scheduler, series, inputs, params, requested, limit, arrived
                )
            finally:
                series.inflight.dec()
        except ServingError as exc:
            self._failed(name, model, labels, exc.code, arrived)
            raise
        except asyncio.CancelledError:  # the client left, or its gRPC deadline passed
            late = deadline is not None and _expired(deadline, time.perf_counter() - arrived)
            self._failed(name, model, labels, ErrorCode.DEADLINE_EXCEEDED if late else ErrorCode.CANCELLED, arrived)
            raise
        finally:
            self._active -= 1

    def _failed(
        self, name: str, model: LoadedVersion | None, labels: ModelLabels, code: ErrorCode, arrived: float
    ) -> None:
        seconds = time.perf_counter() - arrived
        if labels is UNKNOWN and self.repository.entry(name) is not None:
            labels = ModelLabels(name, "", "", "", "")  # never the client's version string
        self.metrics.observe_failure(labels, code.name, seconds)
        if model is not None:
            self.stats.record(model.config.name, model.version, False, int(seconds * 1e9))

    async def _run(
        self,
        model: LoadedVersion,
        backend_name: str,
        scheduler: Scheduler,
        series: ModelSeries,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str],
        deadline: float | None,
        arrived: float,
    ) -> InferResult:
        requested = list(requested)
        known = [t.name for t in model.pipeline.outputs]
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise InvalidInput(f"model '{model.config.name}' has no output(s) {unknown}; it offers {known}")
        if len(set(requested)) != len(requested):
            raise InvalidInput(f"output(s) requested twice: {requested}")
        if _small(inputs):
            prepared = model.pipeline.prepare(inputs, params)
        else:  # tokenising large documents would hold up the event loop (health checks, other replies)
            loop = asyncio.get_running_loop()
            prepared = await loop.run_in_executor(self.executor, model.pipeline.prepare, inputs, params)
        done = await scheduler.submit(prepared, deadline)
        outputs = done.outputs
        selected = {k: outputs[k] for k in requested} if requested else outputs
        # Bookkeeping runs as the loop's next callback: after the servicer has built the response
        # and handed it to gRPC, so the histogram updates are off the request's path. Any later
        # RPC, ModelStatistics included, is handled after it (the loop runs FIFO).
        answered = time.perf_counter_ns()
        asyncio.get_running_loop().call_soon(self._account, model, series, done, answered, answered / 1e9 - arrived)
        return InferResult(model=model, backend=backend_name, outputs=selected)

    def _account(self, model: LoadedVersion, series: ModelSeries, done: Done, answered_ns: int, seconds: float) -> None:
        """Record a successful request: Triton-style statistics and the Prometheus series."""
        queue_ns = max(0, done.started_ns - done.queued_ns)  # the real wait in the scheduler's queue
        self.stats.record(
            model.config.name, model.version, True, int(seconds * 1e9), queue_ns=queue_ns,
            infer_ns=done.finished_ns - done.started_ns, output_ns=answered_ns - done.finished_ns,
        )  # fmt: skip
        series.observe(seconds, queue_ns / 1e9)

    def _scheduler(self, model: LoadedVersion, backend: str) -> Scheduler:
        """A new scheduler for one model version on one backend (built by `self.schedulers`).

        Its closures hold the version's name, pipeline and runners, never the version itself.
        """
        name, version = model.config.name, model.version
        _, runners = model.runners(backend)
        series = self.metrics.series(labels_of(model, backend))

        def on_execution(execution: Execution) -> None:
            self.stats.record_execution(name, version, execution.rows, execution.finished_ns - execution.started_ns)
            series.observe_execution(execution.rows, execution.calls)

        return Scheduler(
            f"model '{name}' version {version}",
            model.pipeline,
            lambda calls: series.timed(runners, calls),
            Policy.of(model.config, self.workers),
            self.executor,
            on_execution,
            self._alone if self.inline_when_idle else lambda: False,
        )

    def _alone(self) -> bool:
        """Only the request asking is in the server: nothing to batch it with, nothing to overlap."""
        return self._active == 1


def _expired(limit: float, waited: float) -> bool:
    """Whether a request cancelled now, after `waited` seconds, was cancelled by its deadline."""
    left = limit - asyncio.get_running_loop().time()
    return left <= max(DEADLINE_SLACK_S, DEADLINE_SLACK_SHARE * (waited + left))


def _timeout(params: Mapping[str, Any]) -> int | None:
    """Triton's `timeout` request parameter: microseconds the request may wait to start."""
    value = params.get("timeout")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"parameter 'timeout' must be a non-negative integer (microseconds), got {value!r}")
    return value


def _small(inputs: Mapping[str, np.ndarray]) -> bool:
    size = 0
    for array in inputs.values():
        size += sum(len(x) for x in array.reshape(-1)) if array.dtype == object else array.nbytes
        if size > SMALL_REQUEST_BYTES:
            return False
    return True
