"""A closed-loop load generator on grpc.aio: N clients, each sending its next request as soon as
the previous one is answered, for a fixed time; requests/s and latency percentiles."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from runtime.percentiles import percentile

Call = Callable[[int], Awaitable[Any]]  # the i-th request of a client


@dataclass
class Load:
    """One closed-loop measurement."""

    clients: int
    seconds: float
    requests: int  # answered within the window
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def closed_loop(call: Call, clients: int, seconds: float, warmup: float = 0.5) -> Load:
    """Run `clients` closed loops of `call` for `warmup + seconds`: throughput counts the answers
    within the window after the warm-up, latency the requests that both start and end in it."""
    start = time.perf_counter()
    begin, end = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    answered = errors = 0

    async def client(index: int) -> None:
        nonlocal answered, errors
        for i in itertools.count(index, clients):
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                await call(i)
            except Exception:
                errors += 1
                continue
            t1 = time.perf_counter()
            if begin <= t1 <= end:
                answered += 1
                if t0 >= begin:
                    latencies.append(t1 - t0)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return Load(
        clients=clients,
        seconds=seconds,
        requests=answered,
        errors=errors,
        rps=answered / seconds,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
    )
