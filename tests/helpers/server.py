"""The server in this process on port 0 (its own event loop in a thread), gRPC stubs onto it, and
the requests the serving tests send."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from serving.app import App
from serving.settings import ServerSettings

# dates-additive's longest input (max_input_length 64): its encoder and every attention step cost
# most. 64 of them at beam 16 decode for about 1.4 s on torch and 0.6 s on ONNX Runtime (2-core
# machine), where 64 short dates took 0.4 s and 0.2 s: tests that must catch a request computing
# use these, so that a faster machine does not end it first.
LONGEST_DATES_INPUT = "Mittwoch, 21. September 1951, und Donnerstag, 22. September 1952"
assert len(LONGEST_DATES_INPUT) == 64

# the client's own message limits lifted (gRPC's default receive limit is 4 MiB): what a test
# sends and gets back is judged by the server's limits alone
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class RunningServer:
    """An App serving in a background thread with its own event loop."""

    def __init__(self, settings: ServerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app: App = self.call(self._build(settings))
        self.port: int = self.call(self.app.start())
        self.address = f"127.0.0.1:{self.port}"
        self.http_address = f"127.0.0.1:{self.app.http_port}"  # KServe V2 REST

    @staticmethod
    async def _build(settings: ServerSettings) -> App:
        return App(settings)

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def settle(self) -> None:
        """Return once the loop has run every callback scheduled so far.

        The data plane records a request's metrics as a loop callback after the response is
        handed to gRPC; a reader on another thread (/metrics) calls this before reading.
        """
        self.call(asyncio.sleep(0))

    def stop(self) -> None:
        self.call(self.app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def start_server(repository: Path, **settings: Any) -> RunningServer:
    """A server on loopback, every port 0 (free ones), unless `settings` say otherwise."""
    grpc_ = {"host": "127.0.0.1", "port": 0, **settings.pop("grpc", {})}
    metrics = {"host": "127.0.0.1", "port": 0, **settings.pop("metrics", {})}
    http = {"host": "127.0.0.1", "port": 0, **settings.pop("http", {})}
    return RunningServer(ServerSettings(repository=repository, grpc=grpc_, metrics=metrics, http=http, **settings))


@contextmanager
def grpc_stub(address: str, options: list[tuple[str, Any]] | None = None) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """An Open Inference Protocol stub on an insecure channel to `address`, closed at the end."""
    with grpc.insecure_channel(address, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def slow_request() -> pb.ModelInferRequest:
    """dates-additive on torch, 56 texts, beam 16: a call that runs for a while."""
    texts = np.array([f"{d}. September 19{d + 50}".encode() for d in range(1, 29)] * 2, dtype=np.object_)
    req = pb.ModelInferRequest(model_name="dates-additive")
    req.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    req.raw_input_contents.append(serialize_bytes(texts))
    req.parameters["backend"].string_param = "torch"
    req.parameters["beam_size"].int64_param = 16
    return req


def light_request() -> pb.ModelInferRequest:
    """sort-pointer, batch 1 of 5 values (answer: order 3 1 0 4 2): a call of about a millisecond."""
    req = pb.ModelInferRequest(model_name="sort-pointer")
    req.inputs.add(name="values", datatype="INT64", shape=[1, 5])
    req.raw_input_contents.append(np.array([[5, 3, 9, 1, 7]], dtype="<i8").tobytes())
    return req


def send_dates(address: str, plan: dict[tuple[str, str], int]) -> None:
    """(model, backend) -> n: n batch-1 dates requests ("1. September 1983", ...) to each, one by one."""
    with grpc_stub(address) as stub:
        for (model, backend), n in plan.items():
            for i in range(n):
                req = pb.ModelInferRequest(model_name=model)
                req.inputs.add(name="text", datatype="BYTES", shape=[1])
                text = f"{i + 1}. September 1983".encode()
                req.raw_input_contents.append(serialize_bytes(np.array([text], dtype=np.object_)))
                req.parameters["backend"].string_param = backend
                stub.ModelInfer(req, timeout=30)
