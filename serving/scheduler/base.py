"""What every scheduler of one model version and backend shares: the records it hands back
(`Execution`, `Done`), admission (the queue bound, a deadline already past), the request's deadline,
and the event loop it runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.errors import DeadlineExceeded, QueueFull
from runtime.pipelines.base import Outputs, Runners
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


class BaseScheduler:
    """Admission and deadlines of one model version on one backend (Triton's queue policy)."""

    def __init__(self, name: str, policy: Policy) -> None:
        self.name = name  # for messages: "model 'x' version 1"
        self.policy = policy
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first submit (all run on it)

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
