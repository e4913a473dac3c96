"""The least a Python gRPC server can do for a model: a bare grpc.aio handler running its pipeline.

`ModelReady(name=MODEL)` runs MODEL's pipeline (ONNX Runtime) on the benchmark's fixed batch-1
input on the event loop and answers `ready`: no tensor conversion, validation, metrics or
statistics, the same gRPC core setting as `attnserve serve`. serve_latency.py runs it beside
attnserve, so the difference between the two is what attnserve itself adds.

    python benchmarks/bare_server.py --repository model_repository --models debian-han --port 0
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from latency_inputs import INPUTS

from backends.loader import get_backend
from serving.grpc.core import apply_experiments
from serving.repository import ModelRepository
from serving.settings import GrpcSettings


async def serve(repository: Path, models: list[str], port: int) -> None:
    from grpc import aio

    from protocol.gen.inference import grpc_service_pb2 as pb
    from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc

    repo = ModelRepository(repository, get_backend)
    calls = {}
    for name in models:
        versions = repo.load(name).versions
        version = versions[max(versions)]
        _, runners = version.runners("onnxruntime")
        calls[name] = (version.pipeline, INPUTS[version.config.task], runners)

    class BareServicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
            pipeline, inputs, runners = calls[request.name]
            pipeline.run(inputs, {}, runners)
            return pb.ModelReadyResponse(ready=True)

    server = aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(BareServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"bare server on port {bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--models", required=True, help="comma-separated")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    apply_experiments(GrpcSettings().core_experiments)  # as `attnserve serve` does, before grpc loads
    asyncio.run(serve(args.repository, args.models.split(","), args.port))


if __name__ == "__main__":
    main()
