"""The transport-neutral request path: find the model, prepare the request, hand it to the
scheduler of its model version and backend, record it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import InvalidInput, ModelUnavailable, shown
from runtime.pipelines.base import Outputs, Pipeline, Prepared
from serving.metrics import ModelLabels, ServingMetrics
from serving.record import CANCELLED, DEADLINE_EXCEEDED, RecordSink, RequestRecord, code_of
from serving.repository import LoadedVersion, ModelRepository
from serving.scheduler import Calls, Done, Execution, IterationScheduler, Policy, Scheduler, Schedulers
from serving.scheduler.registry import ModelScheduler
from serving.stats import StatsRegistry
from serving.tracing import RequestTracer

# A client's deadline reaches the server as a cancellation (RST_STREAM), which may come before the
# server's own copy of the deadline by the request's transit time: a cancellation in the last
# quarter of a request's time budget (or its last 2 ms) counts as DEADLINE_EXCEEDED.
DEADLINE_SLACK_S = 0.002
DEADLINE_SLACK_SHARE = 0.25
SMALL_REQUEST_BYTES = 16 * 1024  # larger requests are prepared in a worker thread


@dataclass
class InferResult:
    """A request's answer, or one part of it (`infer_stream`): `final` marks the last part."""

    model: LoadedVersion
    backend: str
    outputs: dict[str, np.ndarray]
    final: bool = True


def labels_of(model: LoadedVersion, backend: str) -> ModelLabels:
    cfg = model.config
    return ModelLabels(cfg.name, str(model.version), model.attention_label, backend, cfg.device)


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
        if exc is not None and record.ok:  # the data plane may have named the cause already
            record.code = code_of(exc)  # the exception propagates: the interceptor answers it
        # Any later RPC, ModelStatistics included, is handled after this (the loop runs FIFO).
        asyncio.get_running_loop().call_soon(self._account, record)


class DataPlane:
    """Runs inference requests; the gRPC servicers only convert to and from protobuf.

    A request is validated and prepared by its model's pipeline, then handed to the scheduler of
    its model version and backend (serving.scheduler), which queues, batches and runs it.

    Every request is counted once, by its RequestRecord, and every executed batch once, by its
    Execution, in both the Triton statistics and the Prometheus series (`RecordSink`). A failure
    that never resolved a model version (a malformed request, an unknown version or backend) of a
    model the server serves counts under that model's current version, the one a request without
    a version gets; a name the server does not serve counts under model="" in Prometheus only.
    The client's version string is never a label.
    """

    def __init__(
        self,
        repository: ModelRepository,
        executor: ThreadPoolExecutor,
        stats: StatsRegistry,
        metrics: ServingMetrics,
        inline_when_idle: bool = True,
        tracer: RequestTracer | None = None,
        workers: int = 4,
    ) -> None:
        self.repository = repository
        self.executor = executor
        self.stats = stats
        self.metrics = metrics
        self.sink = RecordSink(stats, metrics)
        self.inline_when_idle = inline_when_idle
        self.tracer = tracer  # None: tracing is off (serving.tracing)
        self.workers = workers
        self.schedulers = Schedulers(self._scheduler)
        self._active = 0  # requests holding a model; touched only on the event loop thread

    def track(self, name: str) -> Tracking:
        """Open the record of a request for model `name`, arriving now, as a context manager.

        Transports wrap the whole request in it (decoding, `infer`, the response), so a failure
        anywhere, of any kind, is counted with its status code.
        """
        record = RequestRecord(name, time.perf_counter_ns())
        if self.tracer is not None:
            record.trace = self.tracer.capture()
        return Tracking(record, self._account)

    def unread(self, code: str) -> None:
        """Count a request whose client left before its body was read (its model is unknown)."""
        record = RequestRecord("", time.perf_counter_ns())
        record.done, record.code = record.arrived, code
        self._account(record)

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
        deadline: float | None = None,
    ) -> InferResult:
        """Run one request: `infer_stream` without partial answers, folded to its one, final item.
        `requested` names outputs to return (empty: all of them); `deadline` is the client's, in
        event-loop time (None: none).

        `record` is the transport's (see `track`); without one, the request is tracked here.
        """
        stream = self.infer_stream(
            name, version, inputs, params, requested, record=record, deadline=deadline, parts=False
        )
        (answer,) = [result async for result in stream]  # without parts, the final answer is the only item
        return answer

    async def infer_stream(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str] = (),
        *,
        record: RequestRecord | None = None,
        deadline: float | None = None,
        parts: bool = True,
    ) -> AsyncGenerator[InferResult, None]:
        """Run one request as `infer` does, yielding its answer in parts as they are computed: one
        per decoded token for a greedy translation (runtime.pipelines.translate), else the whole
        answer as the only part. The last part has `final` set. One request to the statistics and
        metrics, however many parts. Close the iterator (or cancel its consumer) to stop the work:
        the request leaves its queue, or its batch at the next step once nobody else waits for it.
        `parts=False`: only the whole answer (`infer`).
        """
        tracking = self.track(name) if record is None else contextlib.nullcontext(record)
        with tracking as record, self._serving(record, name, version, params, deadline) as (model, backend):
            scheduler, prepared, limit, selected = await self._prepare(
                record, model, backend, inputs, params, requested, deadline
            )
            final = False
            if not parts:
                done = await scheduler.submit(prepared, limit)
            else:
                loop = asyncio.get_running_loop()
                queue: asyncio.Queue[tuple[Outputs, bool] | None] = asyncio.Queue()

                def on_step(outputs: Outputs, last: bool) -> None:  # in the thread computing the request
                    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                        loop.call_soon_threadsafe(queue.put_nowait, (outputs, last))

                task = asyncio.ensure_future(scheduler.submit(dataclasses.replace(prepared, on_step=on_step), limit))
                # every part is queued before the request's result reaches the loop, so None comes last
                task.add_done_callback(lambda _: queue.put_nowait(None))
                try:
                    while (part := await queue.get()) is not None:
                        outputs, final = part
                        yield InferResult(model, backend, _select(outputs, selected), final)
                    done = await task
                finally:
                    if not task.done():  # the consumer left: the request leaves the scheduler
                        task.cancel()
            _finished(record, done)
            if not final:  # not streamed (beam search, a classifier, `parts=False`): the answer is the one part
                yield InferResult(model, backend, _select(done.outputs, selected))

    @contextlib.contextmanager
    def _serving(
        self, record: RequestRecord, name: str, version: str, params: Mapping[str, Any], deadline: float | None
    ) -> Iterator[tuple[LoadedVersion, str]]:
        """Hold the model version serving a request and resolve its backend, for the request's time."""
        # held until the request is done: a swap or unload closes it only after that
        model = self.repository.acquire(name, version)
        self._active += 1
        try:
            _served_by(record, model)
            backend = params.get("backend")
            if backend is not None and not isinstance(backend, str):
                raise InvalidInput(f"parameter 'backend' must be a string, got {shown(repr(backend))}")
            backend_name = backend or model.default_backend
            if backend_name not in model.backends:
                model.runners(backend_name)  # InvalidInput naming the backends it runs on
            record.backend = backend_name
            series = record.series = self.metrics.series(record.labels())
            series.inflight.inc()
            try:
                yield model, backend_name
            except (asyncio.CancelledError, GeneratorExit):  # the client left, or its gRPC deadline passed
                if deadline is not None and _expired(deadline, (time.perf_counter_ns() - record.arrived) / 1e9):
                    record.code = DEADLINE_EXCEEDED
                elif record.ok:  # GeneratorExit: `infer_stream` closed by its consumer
                    record.code = CANCELLED
                raise
            finally:
                series.inflight.dec()
        finally:
            self._active -= 1
            model.release()

    async def _prepare(
        self,
        record: RequestRecord,
        model: LoadedVersion,
        backend: str,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str],
        deadline: float | None,
    ) -> tuple[ModelScheduler, Prepared, float | None, list[str]]:
        """Check the requested outputs and prepare the request: its scheduler, its prepared form,
        the loop time by which it must start, and the outputs to answer (empty: all)."""
        requested = list(requested)
        known = [t.name for t in model.pipeline.outputs]
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise InvalidInput(f"model '{model.config.name}' has no output(s) {shown(unknown)}; it offers {known}")
        if len(set(requested)) != len(requested):
            raise InvalidInput(f"output(s) requested twice: {shown(requested)}")
        scheduler = self.schedulers.get(model, backend)
        loop = asyncio.get_running_loop()
        limit = scheduler.deadline(deadline, _timeout(params), loop.time())
        scheduler.admit(scheduler.queued, limit)  # a full queue refuses before any preparation (submit checks again)
        start = time.perf_counter_ns()
        if _small(inputs):
            prepared = model.pipeline.prepare(inputs, params)
        else:  # tokenising large documents would hold up the event loop (health checks, other replies)
            prepared = await loop.run_in_executor(self.executor, model.pipeline.prepare, inputs, params)
        record.batch, record.prepare = prepared.rows, time.perf_counter_ns() - start
        return scheduler, prepared, limit, requested

    def _scheduler(self, model: LoadedVersion, backend: str) -> ModelScheduler:
        """A new scheduler for one model version on one backend (built by `self.schedulers`):
        request-level, or iteration-level for `decode_batching: iteration`.

        It holds the version's pipeline and runners and a weak reference to the version itself,
        through which each batch holds the version while it computes in a worker thread (a request
        cancelled meanwhile releases its own hold).
        """
        name, version = model.config.name, model.version
        _, runners = model.runners(backend)
        series = self.metrics.series(labels_of(model, backend))
        ref = weakref.ref(model)

        def hold() -> Callable[[], None]:
            held = ref()
            if held is None:
                raise ModelUnavailable(f"model '{name}' version {version} was unloaded")
            held.acquire()
            return held.release

        def on_execution(execution: Execution) -> None:
            self.sink.write_execution(name, version, series, execution)

        def on_steps(rows: list[int], calls: Calls) -> None:
            self.sink.write_steps(series, rows, calls)

        label = f"model '{name}' version {version}"
        counters = model.counters  # not `model`: the scheduler holds the version only weakly
        instrument = lambda calls: series.timed(runners, calls, counters)  # noqa: E731
        policy = Policy.of(model.config, self.workers)
        inline_ok = self._alone if self.inline_when_idle else lambda: False
        if model.config.decode_batching == "iteration":
            pipeline: Any = model.pipeline  # a translate or sort pipeline (ModelConfig checks the loop)
            return IterationScheduler(
                label, pipeline, instrument, policy, self.executor, on_execution, on_steps, inline_ok, hold
            )
        return Scheduler(label, model.pipeline, instrument, policy, self.executor, on_execution, inline_ok, hold)

    def drain(self) -> None:
        """Refuse every request still waiting in a scheduler (UNAVAILABLE): the server is stopping and
        its worker threads go next. Requests computing finish, or fail as their threads stop."""
        for scheduler in self.schedulers.all():
            scheduler.drain(ModelUnavailable(f"{scheduler.name}: the server is shutting down"))

    def _alone(self) -> bool:
        """Only the request asking is in the server: nothing to batch it with, nothing to overlap."""
        return self._active == 1

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


def _finished(record: RequestRecord, done: Done) -> None:
    record.queued, record.started, record.finished = done.queued_ns, done.started_ns, done.finished_ns
    record.calls = done.calls  # the component calls it took part in (shared with its batch)


def _select(outputs: Outputs, requested: list[str]) -> Outputs:
    return {k: outputs[k] for k in requested} if requested else outputs


def _served_by(record: RequestRecord, model: LoadedVersion) -> None:
    cfg = model.config
    attention = model.attention_label  # a registered variant or "other": no config makes label values
    record.model, record.version, record.attention, record.device = cfg.name, model.version, attention, cfg.device


def _expired(deadline: float, waited: float) -> bool:
    """Whether a request cancelled now, after `waited` seconds, was cancelled by its deadline."""
    left = deadline - asyncio.get_running_loop().time()
    return left <= max(DEADLINE_SLACK_S, DEADLINE_SLACK_SHARE * (waited + left))


def _timeout(params: Mapping[str, Any]) -> int | None:
    """Triton's `timeout` request parameter: microseconds the request may wait to start."""
    value = params.get("timeout")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(
            f"parameter 'timeout' must be a non-negative integer (microseconds), got {shown(repr(value))}"
        )
    return value


def _small(inputs: Mapping[str, np.ndarray]) -> bool:
    size = 0
    for array in inputs.values():
        size += sum(len(x) for x in array.reshape(-1)) if array.dtype == object else array.nbytes
        if size > SMALL_REQUEST_BYTES:
            return False
    return True
