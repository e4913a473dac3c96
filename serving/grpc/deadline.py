"""The client's gRPC deadline as the data plane takes it: event-loop time, or None."""

from __future__ import annotations

import asyncio

from grpc import aio

NO_DEADLINE_S = 1e8  # gRPC reports "no deadline" as None, or as a far-future remaining time


def deadline_of(context: aio.ServicerContext) -> float | None:
    """When the client stops waiting, on the running loop's clock (None: it set no deadline)."""
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > NO_DEADLINE_S:
        return None
    return asyncio.get_running_loop().time() + remaining
