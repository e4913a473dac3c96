"""A bare grpc.aio server speaking the same protocol, whose ModelReady spins for `name` milliseconds.

serve_latency.py runs it beside attnserve: the round trip of a handler that computes exactly as
long as a model's pipeline, with nothing of attnserve in the way, is the best a Python gRPC
server can do on the machine. Run alone: `python benchmarks/spin_server.py PORT` (0: any port).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from serving.grpc_core import apply_experiments
from serving.settings import GrpcSettings


async def serve(port: int) -> None:
    from grpc import aio

    from serving.grpc._gen.inference import grpc_service_pb2 as pb
    from serving.grpc._gen.inference import grpc_service_pb2_grpc as pb_grpc

    class SpinServicer(pb_grpc.GRPCInferenceServiceServicer):
        """ModelReady(name="1.25") busy-waits 1.25 ms on the event loop, as a batch-1 pipeline does."""

        async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
            end = time.perf_counter() + float(request.name or 0) / 1e3
            while time.perf_counter() < end:
                pass
            return pb.ModelReadyResponse(ready=True)

    server = aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(SpinServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"spin server on port {bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    apply_experiments(GrpcSettings().core_experiments)  # as `attnserve serve` does, before grpc loads
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))


if __name__ == "__main__":
    main()
