"""The transport-neutral request path: find the model, run its pipeline in a worker thread, time it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import InvalidInput, ServingError
from runtime.pipelines.base import Pipeline
from runtime.variants import attention_label
from serving.metrics import UNKNOWN, ModelLabels, ModelSeries, ServingMetrics
from serving.repository import LoadedVersion, ModelRepository
from serving.stats import StatsRegistry


@dataclass
class InferResult:
    model: LoadedVersion
    backend: str
    outputs: dict[str, np.ndarray]


def labels_of(model: LoadedVersion, backend: str) -> ModelLabels:
    cfg = model.config
    return ModelLabels(cfg.name, str(model.version), attention_label(cfg.attention), backend, cfg.device)


class DataPlane:
    """Runs inference requests; the gRPC servicers only convert to and from protobuf."""

    def __init__(
        self,
        repository: ModelRepository,
        executor: ThreadPoolExecutor,
        stats: StatsRegistry,
        metrics: ServingMetrics,
        inline_when_idle: bool = True,
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.stats = stats
        self.metrics = metrics
        self.inline_when_idle = inline_when_idle
        self._computing = 0  # pipelines running now; touched only on the event loop thread

    def rejected(self, model_name: str, error: ServingError, seconds: float) -> None:
        """Count a request that failed before it reached a model (e.g. malformed tensors)."""
        entry = self.repository.entry(model_name) if model_name else None
        labels = ModelLabels(model_name, "", "", "", "") if entry is not None else UNKNOWN
        self.metrics.observe_failure(labels, error.code.name, seconds)

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
        arrived: float | None = None,
    ) -> InferResult:
        """Run one request. `requested` names outputs to return (empty: all of them)."""
        arrived = arrived or time.perf_counter()
        labels = UNKNOWN
        try:
            model = self.repository.get(name, version)
            backend = params.get("backend")
            if backend is not None and not isinstance(backend, str):
                raise InvalidInput(f"parameter 'backend' must be a string, got {backend!r}")
            backend_name, runners = model.runners(backend)
            labels = labels_of(model, backend_name)
            series = self.metrics.series(labels)
            series.inflight.inc()
            try:
                return await self._run(model, backend_name, runners, series, inputs, params, requested, arrived)
            finally:
                series.inflight.dec()
        except ServingError as exc:
            if labels is UNKNOWN and self.repository.entry(name) is not None:
                labels = ModelLabels(name, "", "", "", "")  # never the client's version string
            self.metrics.observe_failure(labels, exc.code.name, time.perf_counter() - arrived)
            raise

    async def _run(
        self,
        model: LoadedVersion,
        backend_name: str,
        runners: dict[str, Any],
        series: ModelSeries,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str],
        arrived: float,
    ) -> InferResult:
        requested = list(requested)
        known = [t.name for t in model.pipeline.outputs]
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise InvalidInput(f"model '{model.config.name}' has no output(s) {unknown}; it offers {known}")
        if len(set(requested)) != len(requested):
            raise InvalidInput(f"output(s) requested twice: {requested}")
        calls: list[tuple[Any, float]] = []  # (stage histogram, seconds) per component call
        timed = series.timed(runners, calls)
        batch = _batch_size(inputs)
        queued = time.perf_counter_ns()

        def work() -> tuple[dict[str, np.ndarray], int, int]:
            started = time.perf_counter_ns()
            outputs = model.pipeline.run(inputs, params, timed)
            return outputs, started, time.perf_counter_ns()

        self._computing += 1
        try:
            if self.inline_when_idle and self._computing == 1 and batch <= 1:
                # A single item and nothing else computing: run on the loop and skip two thread
                # hand-offs (about 0.2 ms). The loop is blocked for one batch-1 pipeline (a few
                # ms); batches go to the worker threads so health checks and signals stay prompt.
                outputs, started, finished = work()
            else:
                outputs, started, finished = await asyncio.get_running_loop().run_in_executor(self.executor, work)
        except ServingError:
            self.stats.record(model.config.name, model.version, False, batch, time.perf_counter_ns() - queued)
            raise
        finally:
            self._computing -= 1
        selected = {k: outputs[k] for k in requested} if requested else outputs
        done = time.perf_counter_ns()
        seconds = time.perf_counter() - arrived
        # Bookkeeping runs as the loop's next callback: after the servicer has built the response
        # and handed it to gRPC, so the histogram updates (0.1-0.2 ms) are off the request's path.
        # Any later RPC, ModelStatistics included, is handled after it (the loop runs FIFO).
        asyncio.get_running_loop().call_soon(
            self._account, model, series, batch, (queued, started, finished, done), seconds, calls
        )
        return InferResult(model=model, backend=backend_name, outputs=selected)

    def _account(
        self,
        model: LoadedVersion,
        series: ModelSeries,
        batch: int,
        marks_ns: tuple[int, int, int, int],
        seconds: float,
        calls: list[tuple[Any, float]],
    ) -> None:
        """Record a successful request: Triton-style statistics and the Prometheus series."""
        queued, started, finished, done = marks_ns
        self.stats.record(
            model.config.name, model.version, True, batch, done - queued,
            queue_ns=started - queued, infer_ns=finished - started, output_ns=done - finished,
        )  # fmt: skip
        series.observe(seconds, (started - queued) / 1e9, batch, calls)


def _batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0
