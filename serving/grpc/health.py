"""grpc.health.v1 whose Watch streams end when the server stops.

grpc's own servicer keeps a Watch stream open until the client leaves, so a stopping server
would wait for the whole grace period on every watcher. Here `end_watches()` (called as the
server stops, after the drain delay in which watchers saw NOT_SERVING) ends each stream with OK,
and later Watch calls end at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio
from grpc_health.v1.health import aio as health_aio


class DrainableHealth(health_aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._ended = asyncio.Event()

    def end_watches(self) -> None:
        self._ended.set()

    async def Watch(self, request: Any, context: aio.ServicerContext) -> None:
        if self._ended.is_set():
            return
        watch = asyncio.ensure_future(super().Watch(request, context))
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({watch, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            ended.cancel()
        if watch.done() and not watch.cancelled():
            watch.result()  # its own failure, if any
