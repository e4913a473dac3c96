"""Graceful stop without lost calls: refuse new calls in the application, finish the accepted ones,
and only then stop gRPC core.

Why not just `server.stop(grace)`: gRPC core destroys every call it has received but not yet
handed to Python (`grpc_server_shutdown_and_notify` zombifies its pending queue), and the client
sees CANCELLED. grpc.aio keeps one call request outstanding per method, so under concurrent load
most calls that have arrived are in that queue, above all while a handler holds the event loop.
The gate below keeps core running while it answers every call that starts after `close()` with
UNAVAILABLE, waits for the accepted calls to finish and for the refused clients to go quiet,
and then stops core, which by then has nothing queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from serving.grpc.interceptors import end_call
from serving.grpc.method_cache import PerMethodInterceptor

SHUTTING_DOWN = "attnserve is shutting down; send the call to another replica"
# Probes keep answering while the server drains (health says NOT_SERVING, ServerReady false).
PROBES = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
    }
)


# Streaming inference is gated and counted like a unary call: an accepted stream is answered to its end.
INFERENCE_STREAMS = frozenset(
    {
        "/inference.GRPCInferenceService/ModelStreamInfer",
        "/attnserve.v1.Attention/TranslateStream",
    }
)


class DrainGate(PerMethodInterceptor):
    """Counts the unary calls and inference streams being handled; after `close()`, refuses new ones
    with UNAVAILABLE.

    A call is accepted when its handler starts; an accepted call always runs to its end (a stream:
    until the client ends it and its requests are answered, or the grace ends). Other streams
    (health Watch, reflection) pass through uncounted: `server.stop` bounds them by the grace.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self._closed = False
        self.active = 0  # accepted calls not finished yet
        self.refused = 0  # calls answered UNAVAILABLE after close()
        self.last_refused = 0.0  # clock() of the latest refusal
        self._idle: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """From now on, calls that have not started are refused (probes still answer)."""
        self._closed = True
        self.last_refused = self.clock()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no accepted call is running; False if `timeout` passed first."""
        if self.active == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), max(timeout, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            self._idle = None

    async def wait_quiet(self, quiet: float, deadline: float) -> None:
        """Wait until no call has been refused for `quiet` seconds (or `deadline`, a clock() value)."""
        while True:
            now = self.clock()
            wait = min(self.last_refused + quiet, deadline) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        if handler.unary_unary is not None:
            return self._wrap(handler, method in PROBES)
        if method in INFERENCE_STREAMS:
            return self._wrap_stream(handler)
        return None

    def _admit(self, probe: bool = False) -> bool:
        """Accept a call (True), or count it refused once the gate is closed (False; probes never are)."""
        if self._closed and not probe:
            self.refused += 1
            self.last_refused = self.clock()
            return False
        self.active += 1
        return True

    def _done(self) -> None:
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    def _wrap_stream(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`_wrap` for a streaming inference method written as an async generator."""
        unary = handler.unary_stream is not None
        inner = handler.unary_stream if unary else handler.stream_stream

        async def gated(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if not self._admit():
                await end_call(context, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            try:
                async for response in inner(request, context):
                    yield response
            finally:
                self._done()

        make = grpc.unary_stream_rpc_method_handler if unary else grpc.stream_stream_rpc_method_handler
        return make(
            gated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, handler: grpc.RpcMethodHandler, probe: bool) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        async def gated(request: Any, context: aio.ServicerContext) -> Any:
            if not self._admit(probe):
                await end_call(context, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            try:
                return await inner(request, context)
            finally:
                self._done()

        return grpc.unary_unary_rpc_method_handler(
            gated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def drain(gate: DrainGate, server: aio.Server, grace: float, quiet: float = 0.5) -> bool:
    """Stop accepting, finish accepted calls, let refused clients go quiet, then stop core.

    Everything happens within `grace` seconds; calls still running at its end are cancelled.
    Returns True when every accepted call finished in time.
    """
    deadline = gate.clock() + grace
    gate.close()
    finished = await gate.wait_idle(deadline - gate.clock())
    await gate.wait_quiet(quiet, deadline)
    await server.stop(max(deadline - gate.clock(), 0.0))
    return finished
