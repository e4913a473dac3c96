"""Request-level scheduling for one model version on one backend: a queue, admission, deadlines,
and dynamic batching (requests of one key merged into one `Pipeline.execute` call).

Everything here runs on the event loop thread except `Pipeline.execute`, which runs in a worker
thread (or on the loop, for a lone batch-1 request when nothing else is in flight: it saves the
thread hand-offs). No background task: a submit starts a batch when a slot is free, a finished
batch starts the next, and a timer serves `max_queue_delay`. A queued request whose caller leaves
or whose deadline passes is dropped unrun; a batch whose callers have all left stops at its next
component call (between two decoder steps).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.decode import Runner
from runtime.errors import Cancelled, DeadlineExceeded, ModelUnavailable, QueueFull, ServingError
from runtime.pipelines.base import Outputs, Pipeline, Prepared, Runners
from serving.scheduler.inline import InlineGate
from serving.scheduler.policy import Policy

Calls = list[tuple[Any, float]]  # (stage histogram child, seconds) per component call
Instrument = Callable[[Calls], Runners]  # the runners, timed into the given list
Hold = Callable[[], Callable[[], None]]  # hold the model version open; returns the release


@dataclass
class Execution:
    """One executed batch: what statistics and metrics record once per batch."""

    rows: int  # batch items
    requests: int
    started_ns: int
    finished_ns: int
    calls: Calls


@dataclass
class Done:
    """A request's answer and its times (perf_counter_ns): queued, started, finished computing."""

    outputs: Outputs
    queued_ns: int
    started_ns: int
    finished_ns: int
    execution: Execution


@dataclass(eq=False)
class _Batch:
    """A batch computing in a worker thread; abandoned once every caller in it has left."""

    waiting: int  # callers still waiting for their answers
    abandoned: bool = False


@dataclass(eq=False)
class _Job:
    prepared: Prepared
    future: asyncio.Future[Done]
    queued_ns: int
    deadline: float | None  # loop time
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    batch: _Batch | None = None  # set when it starts computing in a worker thread


class Scheduler:
    """Admits, queues and batches the requests of one model version on one backend."""

    def __init__(
        self,
        name: str,
        pipeline: Pipeline,
        instrument: Instrument,
        policy: Policy,
        executor: Executor,
        on_execution: Callable[[Execution], None],
        inline_ok: Callable[[], bool] = lambda: False,
        hold: Hold = lambda: lambda: None,
    ) -> None:
        self.name = name  # for messages: "model 'x' version 1"
        self.pipeline = pipeline
        self.instrument = instrument
        self.policy = policy
        self.executor = executor
        self.on_execution = on_execution
        self.inline_ok = inline_ok
        self.hold = hold  # a batch in a worker thread holds its version: its callers may leave
        self._queue: deque[_Job] = deque()
        self._running = 0  # batches executing now
        self._delay: asyncio.TimerHandle | None = None
        self._gate = InlineGate()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first submit (all run on it)
        self._arrivals = 0  # requests submitted so far

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop it runs on (looked up again only when that loop is closed: each lookup costs a
        getpid syscall)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def queued(self) -> int:
        """Requests waiting (not yet computing)."""
        return len(self._queue)

    def deadline(self, client_deadline: float | None, timeout_us: int | None, now: float) -> float | None:
        """The loop time by which the request must start: its gRPC deadline, and its `timeout`
        parameter (microseconds) or else the model's default timeout, whichever comes first."""
        timeout = timeout_us / 1e6 if timeout_us else self.policy.default_timeout_s
        ends = [d for d in (client_deadline, now + timeout if timeout else None) if d is not None]
        return min(ends) if ends else None

    async def submit(self, prepared: Prepared, deadline: float | None = None) -> Done:
        """Run one request (alone or in a batch) and return its answer.

        QueueFull at once when `max_queue_size` requests wait; DeadlineExceeded when `deadline`
        (loop time) passes before the request starts. A cancelled caller's request leaves the queue.
        """
        loop = self.loop
        if self.policy.max_queue_size and len(self._queue) >= self.policy.max_queue_size:
            raise QueueFull(
                f"{self.name} has {len(self._queue)} requests queued, its max_queue_size "
                f"({self.policy.max_queue_size}); retry later"
            )
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExceeded(f"{self.name}: the request's deadline passed before it was queued")
        job = _Job(prepared, loop.create_future(), time.perf_counter_ns(), deadline)
        self._arrivals += 1
        if self._inline(prepared):
            return self._run_inline(job)
        self._queue.append(job)
        if deadline is not None:
            job.timer = loop.call_at(deadline, self._expire, job)
        self._dispatch()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._leave(job)
            raise

    def _inline(self, prepared: Prepared) -> bool:
        """Compute this request on the loop: it is alone, small, and the model has been quiet (and
        not streamed: its parts must reach the client while it computes)."""
        if self._running or self._queue or prepared.rows > 1 or prepared.on_step is not None or not self.inline_ok():
            return False
        return self._gate.allow()

    # --- forming and running batches -------------------------------------------------

    def _dispatch(self) -> None:
        """Start batches while a slot is free and a batch can be formed."""
        if self._queue:
            now = self.loop.time()
            for job in [j for j in self._queue if j.deadline is not None and j.deadline <= now]:
                self._expire(job)  # its timer has not fired yet (the loop was busy): never start it
        while self._running < self.policy.concurrency and self._queue:
            batch = self._form()
            if not batch:
                return  # waiting for max_queue_delay (a timer calls back)
            self._start(batch)

    def _form(self) -> list[_Job]:
        """The next batch: the oldest request and the queued ones of its key that fit, or [] to wait."""
        first = self._queue[0]
        if not self.policy.batching:
            return [self._queue.popleft()]
        limit, key = self.policy.max_batch_size, first.prepared.key
        chosen, rows = [], 0
        for job in self._queue:
            if job.prepared.key == key and rows + job.prepared.rows <= limit:
                chosen.append(job)
                rows += job.prepared.rows
        target = self._target(rows)
        if target is None:
            return []
        if target < rows:  # cut at a preferred size, oldest first
            kept, rows = [], 0
            for job in chosen:
                if rows + job.prepared.rows > target and kept:
                    break
                kept.append(job)
                rows += job.prepared.rows
            chosen = kept
        taken = set(map(id, chosen))
        self._queue = deque(j for j in self._queue if id(j) not in taken)
        return chosen

    def _target(self, rows: int) -> int | None:
        """Rows to send now (a preferred size, or all), or None to wait for more requests."""
        policy = self.policy
        reached = [p for p in policy.preferred if p <= rows]
        full = rows >= policy.max_batch_size or (policy.preferred and rows in policy.preferred)
        if full or not policy.max_queue_delay_s:
            return max(reached) if reached else rows
        waited = (time.perf_counter_ns() - self._queue[0].queued_ns) / 1e9
        if waited >= policy.max_queue_delay_s:
            return max(reached) if reached else rows
        if reached:
            return max(reached)
        if self._delay is None:
            self._delay = self.loop.call_later(policy.max_queue_delay_s - waited, self._delayed)
        return None

    def _delayed(self) -> None:
        self._delay = None
        self._dispatch()

    def _start(self, batch: list[_Job]) -> None:
        for job in batch:
            if job.timer is not None:
                job.timer.cancel()
        try:
            release = self.hold()
        except ServingError as exc:  # unloaded while they waited (their own holds were released)
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self._running += 1
        calls: Calls = []
        state = _Batch(waiting=len(batch))
        for job in batch:
            job.batch = state
        runners = {name: _abandonable(runner, state, self.name) for name, runner in self.instrument(calls).items()}
        prepared = [job.prepared for job in batch]
        task = self.loop.run_in_executor(self.executor, _execute, self.pipeline, prepared, runners)
        arrivals = self._arrivals
        task.add_done_callback(lambda f: self._finished(batch, calls, f, release, arrivals))

    def _finished(
        self, batch: list[_Job], calls: Calls, task: asyncio.Future[Any], release: Callable[[], None], arrivals: int
    ) -> None:
        """A batch ended (`arrivals`: requests submitted when it started)."""
        release()
        self._running -= 1
        self._gate.observed(len(batch) > 1 or self._arrivals > arrivals or bool(self._queue))
        if task.cancelled():  # the executor was shut down under it
            exc: BaseException | None = ModelUnavailable(f"{self.name} is shutting down")
        else:
            exc = task.exception()
        if exc is not None:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        else:
            outputs, started, finished = task.result()
            rows = sum(job.prepared.rows for job in batch)
            execution = Execution(rows, len(batch), started, finished, calls)
            for job, out in zip(batch, outputs, strict=True):
                if not job.future.done():  # a cancelled caller's answer is dropped
                    job.future.set_result(Done(out, job.queued_ns, started, finished, execution))
            # after the callers' wake-ups: the batch's metrics stay off their responses' path
            self.loop.call_soon(self.on_execution, execution)
        self._dispatch()

    def _run_inline(self, job: _Job) -> Done:
        calls: Calls = []
        self._running += 1
        try:
            (out,), started, finished = _execute(self.pipeline, [job.prepared], self.instrument(calls))
        finally:
            self._running -= 1
        execution = Execution(job.prepared.rows, 1, started, finished, calls)
        self.loop.call_soon(self.on_execution, execution)
        return Done(out, job.queued_ns, started, finished, execution)

    # --- requests that leave before they run -------------------------------------------

    def _expire(self, job: _Job) -> None:
        """A queued request's deadline passed: drop it unrun."""
        job.timer = None
        if self._remove(job) and not job.future.done():
            job.future.set_exception(
                DeadlineExceeded(f"{self.name}: the request's deadline passed while it waited in the queue")
            )

    def _leave(self, job: _Job) -> None:
        """The caller was cancelled (client gone, or its gRPC deadline): drop the request if queued;
        if it computes, its batch stops at the next component call once all its callers are gone."""
        if job.timer is not None:
            job.timer.cancel()
        if not self._remove(job) and job.batch is not None:
            job.batch.waiting -= 1
            job.batch.abandoned = job.batch.waiting == 0

    def _remove(self, job: _Job) -> bool:
        try:
            self._queue.remove(job)
        except ValueError:
            return False  # already running or done
        return True


def _abandonable(runner: Runner, batch: _Batch, name: str) -> Runner:
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if batch.abandoned:  # e.g. between two decoder steps: nobody waits for the rest
            raise Cancelled(f"{name}: every request of the batch was cancelled")
        return runner(feeds)

    return run


def _execute(pipeline: Pipeline, batch: list[Prepared], runners: Runners) -> tuple[list[Outputs], int, int]:
    started = time.perf_counter_ns()
    outputs = pipeline.execute(batch, runners)
    return outputs, started, time.perf_counter_ns()
