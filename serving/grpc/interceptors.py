"""Errors to gRPC status codes, in one place for every servicer."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn

import grpc
from grpc import aio

from runtime.errors import ErrorCode, ServingError
from serving.grpc.method_cache import PerMethodInterceptor

log = logging.getLogger(__name__)

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


async def end_call(context: aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End a call with `code` and `message` (`context.abort`). A call that gRPC has already ended
    (its deadline passed, or its client left, while the server was answering) has nobody to tell:
    gRPC refuses the status (ExecuteBatchError, logged with a traceback per call), so the handler
    ends as cancelled instead, quietly; the request was counted under its own code before."""
    try:
        await context.abort(code, message)
    except aio.AbortError:
        raise
    except Exception:
        remaining = context.time_remaining()
        if context.done() or context.cancelled() or (remaining is not None and remaining <= 0):
            raise asyncio.CancelledError from None
        raise
    raise AssertionError("context.abort returned")  # it always raises


class RateLimitedLog:
    """At most one line per `interval` seconds for a repeated event; the next line says how many
    were left out. A flood of garbage requests cannot flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = -math.inf
        self._dropped = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._dropped += 1
            return
        dropped, self._dropped, self._last = self._dropped, 0, now
        suffix = f" ({dropped} more since the last report)" if dropped else ""
        self.logger.warning(message + suffix, *args)


class Undecodable:
    """Stands for a request body the method's message type cannot parse (grpc would answer
    UNKNOWN with the parser's repr and log a traceback per body)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError, or anything a custom deserializer raises
            return Undecodable(len(data))

    return deserialize


def _message_name(deserializer: Any) -> str:
    cls = getattr(deserializer, "__self__", None)
    descriptor = getattr(cls, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "request")


class _UndecodableInStream(Exception):
    def __init__(self, request: Undecodable) -> None:
        super().__init__()
        self.request = request


class ErrorInterceptor(PerMethodInterceptor):
    """Turn ServingError into its status code and message; anything else into INTERNAL.

    Every INTERNAL answer is logged once, with its traceback and a request id that the answer
    carries too. A body that does not parse as the method's request message is answered
    INVALID_ARGUMENT with a short message, and logged at most once a minute. `deserializers`
    replace a method's body parser (ModelInfer: serving.grpc.infer_body).

    A method's guarded handler is built on its first call and reused (PerMethodInterceptor).
    """

    def __init__(
        self, log_interval: float = 60.0, deserializers: Mapping[str, Callable[[bytes], Any]] | None = None
    ) -> None:
        super().__init__()
        self._undecodable = RateLimitedLog(log, log_interval)
        self._deserializers = dict(deserializers or {})  # method -> its own body parser

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        if handler.unary_unary is not None:
            return self._guard(handler, method)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return self._guard_stream(handler, method)
        return self._guard_body(handler, method)

    def _guard_body(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        """The other kinds (health Watch, reflection, ModelStreamInfer: their errors travel in the
        stream): only a body that does not parse is answered here, INVALID_ARGUMENT (grpc would
        answer UNKNOWN with the parser's repr)."""
        refuse = self._refusal(method, _message_name(handler.request_deserializer))
        kw = {
            "request_deserializer": _tolerant(self._deserializers.get(method, handler.request_deserializer)),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_stream is not None:  # a coroutine that writes its messages (health Watch)
            watch = handler.unary_stream

            async def guarded_unary(request: Any, context: aio.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    await refuse(request, context)
                return await watch(request, context)

            return grpc.unary_stream_rpc_method_handler(guarded_unary, **kw)
        inner = handler.stream_stream
        if inner is None or not inspect.isasyncgenfunction(inner):
            return None  # not a kind this server serves: untouched

        async def guarded_stream(requests: AsyncIterator[Any], context: aio.ServicerContext) -> AsyncIterator[Any]:
            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Undecodable):
                        raise _UndecodableInStream(request)
                    yield request

            try:
                async for response in inner(checked(), context):
                    yield response
            except _UndecodableInStream as bad:
                await refuse(bad.request, context)

        return grpc.stream_stream_rpc_method_handler(guarded_stream, **kw)

    def _refusal(self, method: str, message_name: str) -> Callable[[Undecodable, aio.ServicerContext], Awaitable[None]]:
        """How `method` answers a body that does not parse: INVALID_ARGUMENT, logged at most once a minute."""
        undecodable = self._undecodable

        async def refuse(request: Undecodable, context: aio.ServicerContext) -> None:
            undecodable.warning("%s: undecodable request body (%d bytes)", method, request.size)
            await end_call(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body ({request.size} bytes) is not a valid {message_name} message",
            )

        return refuse

    def _guard(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary
        refuse = self._refusal(method, _message_name(handler.request_deserializer))

        async def guarded(request: Any, context: aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            try:
                return await inner(request, context)
            except aio.AbortError:
                raise
            except Exception as exc:
                await end_call(context, *status_of(method, request, exc))

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_tolerant(self._deserializers.get(method, handler.request_deserializer)),
            response_serializer=handler.response_serializer,
        )

    def _guard_stream(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`_guard` for a server-streaming method written as an async generator: a failure ends the
        stream with its status (after the messages already sent)."""
        inner = handler.unary_stream
        refuse = self._refusal(method, _message_name(handler.request_deserializer))

        async def guarded(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            try:
                async for response in inner(request, context):
                    yield response
            except aio.AbortError:
                raise
            except Exception as exc:
                await end_call(context, *status_of(method, request, exc))

        return grpc.unary_stream_rpc_method_handler(
            guarded,
            request_deserializer=_tolerant(self._deserializers.get(method, handler.request_deserializer)),
            response_serializer=handler.response_serializer,
        )


def status_of(method: str, request: Any, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message that answer a call (or a request in a stream) failing with `exc`:
    a ServingError's own; anything else INTERNAL. Every INTERNAL answer is logged with a request id
    that its message carries."""
    if isinstance(exc, ServingError):
        message = exc.message
        if exc.code is ErrorCode.INTERNAL:
            message = f"{message} (request id {_log_internal(method, request, exc)})"
        return STATUS[exc.code], message
    rid = _log_internal(method, request, exc)
    return grpc.StatusCode.INTERNAL, f"internal error in {method} (request id {rid}); see the server log"


def _log_internal(method: str, request: Any, exc: BaseException) -> str:
    """Log an INTERNAL answer with its traceback; returns the request id the answer carries."""
    rid = uuid.uuid4().hex[:16]
    client_id = getattr(request, "id", "")
    log.error(
        "INTERNAL in %s (request id %s%s): %s",
        method, rid, f", client id {client_id!r}" if isinstance(client_id, str) and client_id else "", exc,
        exc_info=exc,
    )  # fmt: skip
    return rid
