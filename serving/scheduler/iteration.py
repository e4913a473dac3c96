"""Iteration-level decode batching for one model version on one backend (`decode_batching: iteration`).

One running decode batch (runtime.stepwise.DecodeBatch), driven by one worker thread while the model
has work. Before a decoder step the driver admits the requests waiting to join, oldest first, as
many as fit in `max_batch_size` rows (a request brings its items times its beam; one larger than
that joins an empty batch alone): their encoders run together and their rows decode from this step
on. An empty batch admits at once; a decoding one every `iteration_batching.max_waiting_steps`
steps, or sooner when the waiting rows reach `waiting_served_ratio` times its rows or fill its free
rows (runtime.config.IterationBatching): newcomers that join together share one encoder call. A
request that finishes is answered at once and leaves; one whose caller left leaves before the next
step. With nothing left to decode the driver stops, and the next request starts it again at
once: no added wait at low load. A lone single-item request (nothing else in the server, the model
idle, no step callback) is decoded on the event loop thread as the request-level scheduler decodes
it (`Pipeline.execute`: the same answer, without the thread hand-offs and the per-request
arithmetic of a shared batch), under the same adaptive gate (serving.scheduler.inline: company
seen by a driver in a thread closes it); it is recorded as here, one admission and its steps.
`max_queue_delay_microseconds` and `preferred_batch_size` do not apply here (`iteration_batching`
says when newcomers join).

Admission and deadlines are the request-level scheduler's (`BaseScheduler`): `max_queue_size`
bounds the requests waiting to join, and a request's deadline bounds its wait to join; once it
decodes, only its caller leaving stops it (a gRPC deadline cancels the caller).

Statistics (Triton's names): an *execution* is one admission, the encoder run over the requests that
joined together; their items are its inferences (execution_count, inference_count, batch_stats and
attnserve_batch_size count admissions). Each decoder step is recorded by its rows in
attnserve_decode_step_rows (the batch's occupancy) and its duration (stage decode_step);
attnserve_decode_steps, per request-level batch, is not observed. A request's stages run from its
admission: compute_infer spans its encoder call to the last step it took part in.

Threads: `submit`, deadlines and cancellation run on the event loop thread; the driver runs the
components, the decode arithmetic and `answer` in a worker thread. They share the waiting queue under
a lock; the driver hands answers, step callbacks and metrics back through a mailbox that wakes the
loop (`loop.call_soon_threadsafe`) only when the loop has emptied it: while the loop is busy, the
driver's posts add no wake-ups, each of which would cost it the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.config import ModelConfig
from runtime.errors import ModelUnavailable, ServingError
from runtime.pipelines.base import Outputs, Prepared, Runners
from runtime.stepwise import DecodeBatch, Plan, StepHook, Track, supports
from serving.scheduler.base import BaseScheduler, Calls, Done, Execution, Hold, Instrument, Job
from serving.scheduler.policy import Policy

StepCallback = Callable[[np.ndarray, np.ndarray], None]
"""Called on the event loop thread after each decoder step of a greedy request, with its ids so far
[n, t] (a pointer network: positions, -1 once an item is done) and that step's attention [n, width]
(its own source width); the call of the last step comes before the answer. Not called for a beam
request (its hypotheses reorder until the end) nor once its caller has left. An exception it raises
fails the request."""
PartOf = Callable[[Prepared, np.ndarray, np.ndarray], tuple[Outputs, bool]]  # ids, attention -> a partial answer
StepRecorder = Callable[[list[int], Calls], None]  # rows of each decoder step, and its call
FLUSH_STEPS = 64  # decoder steps recorded at most before their metrics go to the loop

log = logging.getLogger(__name__)


class Stepwise(Protocol):
    """The pipeline seam of iteration-level decoding (TranslatePipeline, SortPipeline)."""

    config: ModelConfig

    def encoder_feeds(self, batch: Sequence[Prepared]) -> dict[str, np.ndarray]: ...

    def plan(self, prepared: Prepared) -> Plan: ...

    def source_lengths(self, prepared: Prepared) -> np.ndarray: ...

    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]: ...

    def answer(self, prepared: Prepared, ids: np.ndarray, attn: np.ndarray) -> Outputs: ...


@dataclass(eq=False)
class _Job(Job):
    on_step: StepCallback | None = None  # its tokens after each step (greedy requests only)
    track: Track | None = None  # set by the driver when it takes the job (under the lock)
    started_ns: int = 0  # its admission started
    execution: Execution | None = None  # its admission
    calls: Calls = field(default_factory=list)  # its encoder call and the decoder steps it took part in

    @property
    def streams(self) -> bool:
        return self.on_step is not None


@dataclass
class _Outbox:
    """What the driver hands to the loop in one callback: step callbacks, answers, then metrics."""

    streams: list[tuple[_Job, np.ndarray, np.ndarray]] = field(default_factory=list)  # (job, ids, attention)
    results: list[tuple[_Job, Done | BaseException]] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    step_rows: list[int] = field(default_factory=list)
    step_calls: Calls = field(default_factory=list)

    def urgent(self) -> bool:
        return bool(self.streams or self.results or self.executions) or len(self.step_rows) >= FLUSH_STEPS

    def __bool__(self) -> bool:
        return bool(self.streams or self.results or self.executions or self.step_rows)


class IterationScheduler(BaseScheduler[_Job]):
    """Admits requests into the running decode batch of one model version on one backend."""

    job_type = _Job

    def __init__(
        self,
        name: str,
        pipeline: Stepwise,
        instrument: Instrument,
        policy: Policy,
        executor: Executor,
        on_execution: Callable[[Execution], None],
        on_steps: StepRecorder,
        inline_ok: Callable[[], bool] = lambda: False,
        hold: Hold = lambda: lambda: None,
    ) -> None:
        super().__init__(name, pipeline, instrument, policy, executor, on_execution, inline_ok, hold)
        config = pipeline.config
        if config.decode is None or not supports(config.decode):  # ModelConfig refuses these already
            raise ValueError(f"{name}: its decode loop cannot batch decoder steps across requests")
        self.pipeline: Stepwise = pipeline
        # partial answers from a greedy step (TranslatePipeline); a pipeline without it streams nothing
        self.step_outputs: PartOf | None = getattr(pipeline, "step_outputs", None)
        self.decode = config.decode
        self.joins = config.iteration_batching  # when newcomers join a decoding batch
        self.decoder = next(c.signature for c in config.component_list() if c.name == "decoder_step")
        self.on_steps = on_steps
        self._lock = threading.Lock()  # guards _waiting, _driving and a job's track
        self._waiting: deque[_Job] = deque()  # requests waiting to join
        self._driving = False
        self.steps = 0  # decoder steps run since it was built (written by the driver only)
        self._mail: list[_Outbox] = []  # posted by the driver, not yet delivered (under the lock)
        self._mail_due = False  # a delivery is scheduled on the loop

    @property
    def queued(self) -> int:
        """Requests waiting to join the running batch."""
        return len(self._waiting)

    @property
    def running(self) -> bool:
        """Whether a driver runs (a decode batch has rows, or requests are about to join it)."""
        return self._driving

    async def submit(
        self, prepared: Prepared, deadline: float | None = None, on_step: StepCallback | None = None
    ) -> Done:
        """Decode one request in the running batch and return its answer.

        QueueFull at once when `max_queue_size` requests wait to join; DeadlineExceeded when
        `deadline` (loop time) passes before it joins. A cancelled caller's request leaves the
        queue, or the batch before its next step. `on_step`: see `StepCallback`; without it, a
        greedy request whose `Prepared.on_step` is set gets its partial answers after each step
        (on the loop thread).
        """
        job = self._job(prepared, deadline)
        if on_step is not None:
            job.on_step = on_step
        return await self._submit(job)

    def _job(self, prepared: Prepared, deadline: float | None) -> _Job:
        job = super()._job(prepared, deadline)
        hook, step_outputs = prepared.on_step, self.step_outputs
        if hook is not None and step_outputs is not None:
            job.on_step = lambda ids, attn: hook(*step_outputs(prepared, ids, attn))
        return job

    # --- on the loop thread -------------------------------------------------------------------

    def _idle(self) -> bool:
        # No driver can start while an inline request runs: only `submit`, on this thread, starts one.
        return not self._driving

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            self._waiting.append(job)
            start, self._driving = not self._driving, True
        if start:
            self._start()

    def _run_inline(self, job: _Job) -> Done:
        calls: Calls = []
        started = time.perf_counter_ns()
        (outputs,) = self.pipeline.execute([job.prepared], self.instrument(calls))
        finished = time.perf_counter_ns()
        encoder, steps = calls[:1], calls[1:]  # encoder, then one call per decoder step
        execution = Execution(job.prepared.rows, 1, started, encoder[0][2], encoder)
        rows = job.prepared.rows * self.pipeline.plan(job.prepared).beam
        self.loop.call_soon(self.on_execution, execution)
        self.loop.call_soon(self.on_steps, [rows] * len(steps), steps)
        return Done(outputs, job.queued_ns, started, finished, execution, calls)

    def _start(self) -> None:
        """Start the driver in a worker thread, holding the model version while it runs."""
        loop = self.loop
        try:
            release = self.hold()
        except ServingError as exc:  # unloaded meanwhile
            self._fail_waiting(exc)
            return
        try:
            task = loop.run_in_executor(self.executor, self._drive, loop)
        except RuntimeError:  # the executor is shut down
            release()
            self._fail_waiting(ModelUnavailable(f"{self.name} is shutting down"))
            return
        task.add_done_callback(lambda f: self._stopped(f, release))

    def _stopped(self, task: asyncio.Future[Any], release: Callable[[], None]) -> None:
        release()
        if task.cancelled():  # the executor was shut down before the driver ran
            self._fail_waiting(ModelUnavailable(f"{self.name} is shutting down"))
        elif task.exception() is not None:  # it failed every request it held (see _drive)
            log.error("%s: the decode driver failed", self.name, exc_info=task.exception())
        else:
            self._gate.observed(company=task.result() > 1)

    def _fail_waiting(self, exc: ServingError) -> None:
        """The driver could not start: fail the waiting requests (the next submit starts one anew)."""
        with self._lock:
            self._driving = False
        self.drain(exc)

    def _deliver(self) -> None:
        with self._lock:
            mail, self._mail, self._mail_due = self._mail, [], False
        loop = self.loop
        for out in mail:
            for job, ids, attn in out.streams:
                self._stream(job, ids, attn)
            for job, result in out.results:
                self._settle(job, result)
            for execution in out.executions:  # after the callers' wake-ups: metrics stay off their path
                loop.call_soon(self.on_execution, execution)
            if out.step_rows:
                loop.call_soon(self.on_steps, out.step_rows, out.step_calls)

    def _settle(self, job: _Job, result: Done | BaseException) -> None:
        if job.timer is not None:
            job.timer.cancel()
        if job.future.done():  # its caller left: the answer is dropped
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    def _abandon(self, job: _Job) -> None:
        """Its rows leave the batch before the next step."""
        with self._lock:
            if job.track is not None:
                job.track.cancelled = True

    def _remove(self, job: _Job) -> bool:
        with self._lock:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False  # taken by the driver, or done
        return True

    def _take_waiting(self) -> list[_Job]:
        with self._lock:
            jobs, self._waiting = list(self._waiting), deque()
        return jobs

    def _stream(self, job: _Job, ids: np.ndarray, attn: np.ndarray) -> None:
        if job.on_step is None or job.future.done():
            return
        try:
            job.on_step(ids, attn)
        except Exception as exc:
            self.leave(job)
            job.future.set_exception(exc)

    # --- the driver (a worker thread) ---------------------------------------------------------

    def _drive(self, loop: asyncio.AbstractEventLoop) -> int:
        """Admit, step, answer, until nothing is left to decode; returns the requests it admitted."""
        batch = DecodeBatch(self.decode, self.decoder)
        calls: Calls = []
        runners = self.instrument(calls)
        encoder, decoder = runners["encoder"], runners["decoder_step"]
        step_rows: list[int] = []

        def decode(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            step_rows.append(len(feeds[self.decode.prev_input]))
            return decoder(feeds)

        out = _Outbox()
        streams: list[tuple[_Job, np.ndarray, np.ndarray]] = []  # step callbacks of the step just run
        admitted = 0
        since_join = 0  # decoder steps since newcomers last joined
        try:
            while True:
                with self._lock:
                    joining, expired = self._take(loop, batch.rows, streams, since_join)
                    if not joining and not batch.tracks:
                        self._driving = False
                for job in expired:
                    out.results.append((job, self.expired()))
                if not joining and not batch.tracks:
                    return admitted
                admitted += len(joining)
                if joining:
                    batch = self._join(batch, joining, encoder, calls, out)
                    since_join = 0
                if batch.tracks:
                    batch = self._step(batch, decode, calls, step_rows, out)
                    since_join += 1
                    out.streams += streams  # delivered before the answers of the same step
                    streams.clear()
                if out.urgent():
                    out = self._post(loop, out)
        except BaseException as exc:  # a bug: fail every request it holds; the next submit starts anew
            with self._lock:
                waiting, self._waiting, self._driving = list(self._waiting), deque(), False
            out.results += [(t.handle, exc) for t in batch.tracks] + [(job, exc) for job in waiting]
            raise
        finally:
            self._post(loop, out)

    def _due(self, rows: int, since_join: int) -> bool:
        """(Under the lock.) Whether the waiting requests join a batch decoding `rows` rows now."""
        rule = self.joins
        if not rows or since_join >= rule.max_waiting_steps:
            return True
        enough = min(rule.waiting_served_ratio * rows, self.policy.max_batch_size - rows)
        waiting = 0
        for job in self._waiting:  # every step, under the lock: it stops once there are enough
            waiting += job.prepared.rows * self.pipeline.plan(job.prepared).beam
            if waiting >= enough:
                return True
        return False

    def _take(
        self,
        loop: asyncio.AbstractEventLoop,
        rows: int,
        streams: list[tuple[_Job, np.ndarray, np.ndarray]],
        since_join: int,
    ) -> tuple[list[_Job], list[_Job]]:
        """(Under the lock.) The waiting requests that join now, and those whose deadline passed
        (those that wait for a later join expire by their timers)."""
        now, limit = loop.time(), self.policy.max_batch_size
        joining: list[_Job] = []
        expired: list[_Job] = []
        if not self._due(rows, since_join):
            return joining, expired
        try:
            while self._waiting:
                job = self._waiting[0]
                if job.deadline is not None and job.deadline <= now:  # its timer has not fired yet
                    expired.append(self._waiting.popleft())
                    continue
                plan = self.pipeline.plan(job.prepared)
                need = job.prepared.rows * plan.beam
                if rows and rows + need > limit:
                    break
                on_step = self._on_step(job, streams) if job.on_step is not None and plan.beam == 1 else None
                job.track = Track(job, plan, self.pipeline.source_lengths(job.prepared), on_step=on_step)
                joining.append(self._waiting.popleft())
                rows += need
        except BaseException:  # a bug: back in the queue, where the driver fails them
            self._waiting.extendleft(reversed(expired + joining))
            raise
        return joining, expired

    @staticmethod
    def _on_step(job: _Job, streams: list[tuple[_Job, np.ndarray, np.ndarray]]) -> StepHook:
        def on_step(track: Track, ids: np.ndarray, attn: np.ndarray) -> None:  # new arrays each step
            streams.append((job, ids, attn))

        return on_step

    def _join(self, batch: DecodeBatch, joining: list[_Job], encoder: Any, calls: Calls, out: _Outbox) -> DecodeBatch:
        """Run the newcomers' encoders together and add their rows to the batch (their execution).
        A failed encoder fails the newcomers; a failed join, every request in the batch."""
        joining = [job for job in joining if not job.track.cancelled]  # type: ignore[union-attr]
        if not joining:
            return batch
        started = time.perf_counter_ns()
        try:
            encoded = encoder(self.pipeline.encoder_feeds([job.prepared for job in joining]))
        except Exception as exc:
            calls.clear()
            out.results += [(job, exc) for job in joining]
            return batch
        call = calls.pop()
        try:
            batch.join([job.track for job in joining], encoded)  # type: ignore[misc]
        except Exception as exc:
            out.results += [(t.handle, exc) for t in batch.tracks] + [(job, exc) for job in joining]
            return DecodeBatch(self.decode, self.decoder)
        execution = Execution(
            sum(job.prepared.rows for job in joining), len(joining), started, time.perf_counter_ns(), [call]
        )
        for job in joining:
            job.started_ns, job.execution = started, execution
            job.calls.append(call)
        out.executions.append(execution)
        return batch

    def _step(self, batch: DecodeBatch, decode: Any, calls: Calls, step_rows: list[int], out: _Outbox) -> DecodeBatch:
        """One decoder step; answers the requests it finished. A failed step fails every request in
        the batch, and the driver goes on with a new one."""
        try:
            finished = batch.step(decode)
        except Exception as exc:
            calls.clear()
            step_rows.clear()
            out.results += [(t.handle, exc) for t in batch.tracks]
            return DecodeBatch(self.decode, self.decoder)
        if step_rows:  # the step ran (not only cancelled rows leaving)
            self.steps += 1
            call = calls.pop()
            out.step_rows.append(step_rows.pop())
            out.step_calls.append(call)
            for track in (*batch.tracks, *finished):
                track.handle.calls.append(call)
        ended = time.perf_counter_ns()
        for track in finished:
            job: _Job = track.handle
            try:
                outputs = self.pipeline.answer(job.prepared, *track.result())
            except Exception as exc:
                out.results.append((job, exc))
                continue
            assert job.execution is not None
            out.results.append((job, Done(outputs, job.queued_ns, job.started_ns, ended, job.execution, job.calls)))
        return batch

    def _post(self, loop: asyncio.AbstractEventLoop, out: _Outbox) -> _Outbox:
        """Hand `out` to the loop thread; returns an empty outbox."""
        if out:
            with self._lock:
                self._mail.append(out)
                wake, self._mail_due = not self._mail_due, True
            if wake:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(self._deliver)
        return _Outbox()
