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
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.decode import Runner
from runtime.errors import Cancelled, ModelUnavailable, ServingError
from runtime.pipelines.base import Outputs, Pipeline, Prepared, Runners
from serving.scheduler.base import BaseScheduler, Calls, Done, Execution, Hold, Instrument, Job
from serving.scheduler.policy import Policy


@dataclass(eq=False)
class _Batch:
    """A batch computing in a worker thread; abandoned once every caller in it has left."""

    waiting: int  # callers still waiting for their answers
    abandoned: bool = False


@dataclass(eq=False)
class _Job(Job):
    batch: _Batch | None = None  # set when it starts computing in a worker thread


class Scheduler(BaseScheduler[_Job]):
    """Admits, queues and batches the requests of one model version on one backend."""

    pipeline: Pipeline
    job_type = _Job

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
        super().__init__(name, pipeline, instrument, policy, executor, on_execution, inline_ok, hold)
        self._queue: deque[_Job] = deque()
        self._running = 0  # batches executing now
        self._delay: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Requests waiting (not yet computing)."""
        return len(self._queue)

    def _idle(self) -> bool:
        return not self._running and not self._queue

    def _enqueue(self, job: _Job) -> None:
        self._queue.append(job)
        self._dispatch()

    # --- forming and running batches -------------------------------------------------

    def _dispatch(self) -> None:
        """Start batches while a slot is free and a batch can be formed."""
        if self._queue:
            now = self.loop.time()
            for job in [j for j in self._queue if j.deadline is not None and j.deadline <= now]:
                self.expire(job)  # its timer has not fired yet (the loop was busy): never start it
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
            kept: list[_Job] = []
            rows = 0
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

    def _abandon(self, job: _Job) -> None:
        """A computing request's batch stops at its next component call once all its callers are gone."""
        if job.batch is not None:
            job.batch.waiting -= 1
            job.batch.abandoned = job.batch.waiting == 0

    def _remove(self, job: _Job) -> bool:
        try:
            self._queue.remove(job)
        except ValueError:
            return False  # already running or done
        return True

    def _take_waiting(self) -> list[_Job]:
        jobs = list(self._queue)
        self._queue.clear()
        return jobs


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
