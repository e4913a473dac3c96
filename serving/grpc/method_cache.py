"""An interceptor that wraps each method's handler once and reuses it."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable

import grpc
from grpc import aio


class PerMethodInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints: its base is Any
    """Serve a method with `wrap(handler, method)`, built on the method's first call and reused.

    A method's handler never changes, and building a wrapper per call costs the hot path.
    Unknown methods (no handler: UNIMPLEMENTED) and those `wrap` passes over go through as they are.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None:
            return handler
        wrapped = self.wrap(handler, details.method)
        if wrapped is None:
            return handler
        self._wrapped[details.method] = wrapped
        return wrapped

    @abstractmethod
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        """The handler that serves `method` from now on; None: `handler` as it is."""
