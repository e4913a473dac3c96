"""Hands each traced RPC's method and W3C trace context (gRPC metadata) to the RequestTracer.

Installed only when tracing is on. It runs per call, in the call's own task, before the
interceptors that cache a handler per method: the context variable it sets is the one the
handler's `DataPlane.track` reads (grpc.aio runs the interceptors and the handler in one task).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import grpc
from grpc import aio

from protocol.gen.attnserve.v1 import attention_pb2
from protocol.gen.inference import grpc_service_pb2
from serving.tracing import Incoming


def traced_methods() -> frozenset[str]:
    """The inference RPCs: ModelInfer and every attnserve.v1.Attention method."""
    inference = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    attention = attention_pb2.DESCRIPTOR.services_by_name["Attention"]
    methods = [f"/{inference.full_name}/ModelInfer"]
    methods += [f"/{attention.full_name}/{m.name}" for m in attention.methods]
    return frozenset(methods)


class TraceContextInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints: its base is Any
    """Sets `incoming` to (method, traceparent, tracestate) for the traced methods."""

    def __init__(self, incoming: ContextVar[Incoming | None], methods: frozenset[str] | None = None) -> None:
        self.incoming = incoming
        self.methods = traced_methods() if methods is None else methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in self.methods:
            parent = state = ""
            for key, value in details.invocation_metadata or ():
                if key == "traceparent" and isinstance(value, str):
                    parent = value
                elif key == "tracestate" and isinstance(value, str):
                    state = value
            self.incoming.set(Incoming(details.method, parent, state))
        return await continuation(details)
