"""The scheduler contract, and the skeleton every scheduler shares.

A scheduler serves one model version on one backend: the data plane hands it one prepared request
at a time and awaits its answer. The contract (after vLLM's scheduler interface):

- `submit(prepared, deadline)`: admit the request (QueueFull or DeadlineExceeded at once), compute it
  (alone or with others), return its `Done`. A request whose `Prepared.on_step` is set gets its partial
  answers `(outputs, final)` while it computes, in whichever thread computes it; a scheduler or
  pipeline that cannot stream it leaves the hook uncalled (the answer is then the only part).
- `expire(job)`: a waiting request's deadline passed: it is dropped unrun with DeadlineExceeded.
- `leave(job)`: its caller was cancelled (client gone, gRPC deadline): dropped if it waits; if it
  computes, the scheduler stops its share of the work as soon as nobody else needs it.
- `drain(error)`: refuse every waiting request with `error` (the version or server is going away);
  those computing finish.
- `queued`: how many requests wait.

Written once here: admission (the queue bound, a deadline already past), the request's deadline,
the deadline timer, the choice to compute a lone request on the event loop (serving.scheduler.inline),
expiry, leaving and draining. A scheduler says how requests wait (`_enqueue`, `_remove`, `_take_waiting`),
what leaving a computing request means (`_abandon`), whether it is idle (`_idle`), and how it computes
(`_run_inline`, and its own batches once `_enqueue` has a request).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from runtime.errors import DeadlineExceeded, QueueFull, ServingError
from runtime.pipelines.base import Outputs, Prepared, Runners
from serving.scheduler.inline import InlineGate
from serving.scheduler.policy import Policy

Calls = list[tuple[Any, int, int, int]]  # (stage histogram child, start ns, end ns, FLOPs) per component call
Instrument = Callable[[Calls], Runners]  # the runners, timed into the given list
Hold = Callable[[], Callable[[], None]]  # hold the model version open; returns the release


@dataclass
class Execution:
    """One executed batch: what statistics and metrics record once per batch.

    Request-level: one `Pipeline.execute` call. Iteration-level: one admission, the encoder run
    over the requests that joined the running decode batch together (serving.scheduler.iteration).
    """

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
    own_calls: Calls | None = None  # the request's component calls when not its execution's

    @property
    def calls(self) -> Calls:
        """The component calls the request took part in (its stages and trace spans come from them)."""
        return self.execution.calls if self.own_calls is None else self.own_calls


@dataclass(eq=False)
class Job:
    """One submitted request while its caller waits for it."""

    prepared: Prepared
    future: asyncio.Future[Done]
    queued_ns: int
    deadline: float | None  # loop time by which it must start
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def streams(self) -> bool:
        """Whether its caller takes partial answers (it then never computes on the loop)."""
        return self.prepared.on_step is not None


J = TypeVar("J", bound=Job)  # a scheduler's own record of a request


class BaseScheduler(abc.ABC, Generic[J]):
    """Admits, queues and computes the requests of one model version on one backend (see the module)."""

    job_type: type[J]  # its record of a request: `Job` and what the scheduler keeps of it

    def __init__(
        self,
        name: str,
        pipeline: Any,
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
        self.on_execution = on_execution  # called on the loop thread, once per Execution
        self.inline_ok = inline_ok  # whether the server has no other request (a lone one may run inline)
        self.hold = hold  # work in a worker thread holds its version: its callers may leave
        self._gate = InlineGate()
        self._arrivals = 0  # requests admitted so far
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first submit (all run on it)

    # --- the contract ---------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def queued(self) -> int:
        """Requests waiting (not yet computing)."""

    async def submit(self, prepared: Prepared, deadline: float | None = None) -> Done:
        """Compute one request (alone or with others) and return its answer.

        QueueFull at once when `max_queue_size` requests wait; DeadlineExceeded when `deadline`
        (loop time) passes before the request starts. A cancelled caller's request leaves (`leave`).
        """
        return await self._submit(self._job(prepared, deadline))

    def expire(self, job: J) -> None:
        """A waiting request's deadline passed: drop it unrun."""
        job.timer = None
        if self._remove(job) and not job.future.done():
            job.future.set_exception(self.expired())

    def leave(self, job: J) -> None:
        """The caller was cancelled: drop the request if it waits, else stop its share of the work."""
        if job.timer is not None:
            job.timer.cancel()
        if not self._remove(job):
            self._abandon(job)

    def drain(self, error: ServingError) -> None:
        """Refuse every waiting request with `error`; the ones computing finish."""
        for job in self._take_waiting():
            if job.timer is not None:
                job.timer.cancel()
            if not job.future.done():
                job.future.set_exception(error)

    # --- admission and deadlines ------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop it runs on (looked up again only when that loop is closed: each lookup costs a
        getpid syscall)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.get_running_loop()
        return self._loop

    def deadline(self, client_deadline: float | None, timeout_us: int | None, now: float) -> float | None:
        """The loop time by which the request must start: its gRPC deadline, and its `timeout`
        parameter (microseconds) or else the model's default timeout, whichever comes first."""
        timeout = timeout_us / 1e6 if timeout_us else self.policy.default_timeout_s
        ends = [d for d in (client_deadline, now + timeout if timeout else None) if d is not None]
        return min(ends) if ends else None

    def admit(self, waiting: int, deadline: float | None) -> None:
        """Refuse a new request at once: QueueFull when `waiting` requests already wait and that is
        `max_queue_size`; DeadlineExceeded when its `deadline` (loop time) has passed."""
        limit = self.policy.max_queue_size
        if limit and waiting >= limit:
            raise QueueFull(f"{self.name} has {waiting} requests queued, its max_queue_size ({limit}); retry later")
        if deadline is not None and self.loop.time() >= deadline:
            raise DeadlineExceeded(f"{self.name}: the request's deadline passed before it was queued")

    def expired(self) -> DeadlineExceeded:
        """The error of a queued request whose deadline passed before it started."""
        return DeadlineExceeded(f"{self.name}: the request's deadline passed while it waited in the queue")

    # --- the skeleton -------------------------------------------------------------------------

    def _job(self, prepared: Prepared, deadline: float | None) -> J:
        """The record of a new request, of the scheduler's `job_type`."""
        return self.job_type(prepared, self.loop.create_future(), time.perf_counter_ns(), deadline)

    async def _submit(self, job: J) -> Done:
        loop = self.loop
        self.admit(self.queued, job.deadline)
        self._arrivals += 1
        if self._inline(job):
            return self._run_inline(job)
        if job.deadline is not None:
            job.timer = loop.call_at(job.deadline, self.expire, job)
        self._enqueue(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self.leave(job)
            raise

    def _inline(self, job: J) -> bool:
        """Compute this request on the loop: it is alone, small and streams nothing, and the model
        has been quiet (serving.scheduler.inline)."""
        if not self._idle() or job.prepared.rows > 1 or job.streams or not self.inline_ok():
            return False
        return self._gate.allow()

    @abc.abstractmethod
    def _idle(self) -> bool:
        """Nothing of this model waits or computes."""

    @abc.abstractmethod
    def _run_inline(self, job: J) -> Done:
        """Compute a lone request on the loop thread and record it as the scheduler records its work."""

    @abc.abstractmethod
    def _enqueue(self, job: J) -> None:
        """Queue an admitted request and start work if a slot is free."""

    @abc.abstractmethod
    def _remove(self, job: J) -> bool:
        """Take `job` out of the waiting requests; False when it computes already or is done."""

    @abc.abstractmethod
    def _abandon(self, job: J) -> None:
        """The caller of a request that computes (or is done) has left."""

    @abc.abstractmethod
    def _take_waiting(self) -> list[J]:
        """Take every waiting request out of the queue."""
