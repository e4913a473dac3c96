"""Requests whose client leaves before the server has read them.

grpc.aio reads a unary request's body before it calls the handler, and an RPC cancelled (by its
client, or by its deadline) before that read is dropped inside gRPC: no handler runs, so nothing
would count it. Under a burst of short-deadline calls that is most of them (50 calls with a
10 ms deadline arriving at once on a 2-core machine: only the first 10-20 are read in time).

`IntakeInterceptor` serves the model-serving methods as client-streaming handlers, which gRPC
calls before reading, reads the one request message itself, and reports a call that ended
before its message arrived (`on_unread`, with DEADLINE_EXCEEDED or CANCELLED): the read ends
empty, or gRPC cancels the handler during it (a call whose deadline passed while it waited
inside gRPC to be taken in: under that burst, 35-43 of the 50). Its model is
unknown (the name is in the unread body), so it is counted with empty model labels. On the wire
nothing changes: a unary call and a client-streaming call of one message look the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

import grpc
from grpc import aio

from serving.grpc.interceptors import end_call
from serving.grpc.method_cache import PerMethodInterceptor

DEADLINE_EXCEEDED, CANCELLED = "DEADLINE_EXCEEDED", "CANCELLED"
DEADLINE_SLACK_S = 0.002  # a cancellation this close to the deadline is the deadline's


class IntakeInterceptor(PerMethodInterceptor):
    """Count the calls of `methods` that end before their request is read (see the module).

    Placed after the interceptors that cache handlers per method (it caches its own).
    """

    def __init__(self, methods: Collection[str], on_unread: Callable[[str], None]) -> None:
        super().__init__()
        self.methods = frozenset(methods)
        self.on_unread = on_unread

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        if method not in self.methods or handler.unary_unary is None:
            return None
        return self._read_first(handler)

    def _read_first(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
        on_unread = self.on_unread

        async def read_then_handle(requests: Any, context: aio.ServicerContext) -> Any:
            try:
                request = await context.read()  # EOF when the call ended first
            except asyncio.CancelledError:  # or gRPC cancels the handler during the read: also unread
                on_unread(DEADLINE_EXCEEDED if _expired(context) else CANCELLED)
                raise
            if request is aio.EOF:
                code = await _why_unread(context)
                if code is None:
                    await end_call(context, grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
                on_unread(code)
                raise asyncio.CancelledError
            return await inner(request, context)

        return grpc.stream_unary_rpc_method_handler(
            read_then_handle,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _why_unread(context: aio.ServicerContext) -> str | None:
    """Why a call's request stream ended without a message: DEADLINE_EXCEEDED, CANCELLED (gRPC
    cancels the handler a moment after the read ends), or None: the client is still there and
    simply sent no message."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        return DEADLINE_EXCEEDED if _expired(context) else CANCELLED
    return DEADLINE_EXCEEDED if _expired(context) else None


def _expired(context: aio.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= DEADLINE_SLACK_S
