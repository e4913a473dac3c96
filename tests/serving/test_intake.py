"""Model calls that end before the server reads their request are counted (serving/grpc/intake.py)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from grpc import aio

from serving.grpc._gen.inference import grpc_service_pb2 as pb
from tests.serving.conftest import light_request

INFER = "/inference.GRPCInferenceService/ModelInfer"
UNREAD = {"model": "", "version": "", "attention": "", "backend": "", "device": ""}


def unread(server, code: str) -> float:
    server.settle()
    return server.app.registry.get_sample_value("attnserve_requests_total", {**UNREAD, "code": code}) or 0.0


async def _call_without_body(address: str, timeout: float | None, cancel_after: float | None) -> grpc.StatusCode:
    """Open a ModelInfer call whose message never comes (a client stream that waits), then let its
    deadline pass or cancel it: the server sees a call end before its request was read."""

    async def never():
        await asyncio.sleep(3600)
        yield pb.ModelInferRequest()  # pragma: no cover

    async with aio.insecure_channel(address) as channel:
        call = channel.stream_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString)(
            never(), timeout=timeout
        )
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            call.cancel()
        with contextlib.suppress(grpc.RpcError, asyncio.CancelledError):
            await call
        return await call.code()


@pytest.mark.parametrize(
    ("timeout", "cancel_after", "code"),
    [(0.2, None, "DEADLINE_EXCEEDED"), (None, 0.2, "CANCELLED")],
)
def test_a_call_that_ends_before_its_request_is_read_is_counted(server, timeout, cancel_after, code):
    before = unread(server, code)
    status = asyncio.run(_call_without_body(server.address, timeout, cancel_after))
    assert status.name == code
    for _ in range(50):  # the server learns of the end asynchronously
        if unread(server, code) == before + 1:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert unread(server, code) == before + 1


def test_a_read_call_is_served_and_not_counted_as_unread(server):
    before = unread(server, "DEADLINE_EXCEEDED") + unread(server, "CANCELLED")
    with grpc.insecure_channel(server.address) as channel:
        infer = channel.unary_unary(
            INFER,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        response = infer(light_request(), timeout=30)
    assert response.model_name == "sort-pointer"
    assert unread(server, "DEADLINE_EXCEEDED") + unread(server, "CANCELLED") == before


def test_a_call_without_a_request_message_is_invalid_and_not_counted(server):
    before = unread(server, "DEADLINE_EXCEEDED") + unread(server, "CANCELLED")
    with grpc.insecure_channel(server.address) as channel:
        infer = channel.stream_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString)
        with pytest.raises(grpc.RpcError) as err:
            infer(iter(()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no request message" in err.value.details()
    assert unread(server, "DEADLINE_EXCEEDED") + unread(server, "CANCELLED") == before
