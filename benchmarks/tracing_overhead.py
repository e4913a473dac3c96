"""What tracing costs per request: the same server with tracing off, and on (spans sent over OTLP/gRPC
to a local receiver that drops them), with and without a caller's traceparent; ratios of p50 from
one run.

Each configuration serves dates-additive (a decode loop: the most spans) and sort-pointer in its own
process; one client calls batch-1 ModelInfer back to back, in rotating blocks so machine noise hits
all configurations alike. The spans are made after each response, on the server's event loop, so
a back-to-back client sees their cost when its next request waits behind them.

    python benchmarks/tracing_overhead.py --repository model_repository --requests 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent import futures
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first

import grpc
from latency_inputs import INPUTS
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from serve_latency import rotate, spawn, summary

from protocol import codec
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc

MODELS = {"dates-additive": "translate", "sort-pointer": "sort"}
TRACEPARENT = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP receiver that counts spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request, context):
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def serve(repository: Path, env: dict[str, str]) -> tuple[Any, int]:
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository.resolve()),
           "--grpc-port", "0", "--metrics-port", "0", "--host", "127.0.0.1", "--models", ",".join(MODELS)]  # fmt: skip
    return spawn(cmd, r"serving gRPC on port (\d+)", env={**os.environ, "ATTNSERVE_DRAIN_DELAY_SECONDS": "0", **env})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sink = Sink()
    receiver = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, receiver)
    otlp = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    on = {"ATTNSERVE_TRACING__ENABLED": "true", "ATTNSERVE_TRACING__ENDPOINT": f"http://127.0.0.1:{otlp}"}
    configs = {"tracing off": ({}, None), "tracing on": (on, None), "tracing on + traceparent": (on, TRACEPARENT)}
    procs, kinds = [], {}
    try:
        for name, (env, metadata) in configs.items():
            proc, port = serve(args.repository, env)
            procs.append(proc)
            stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
            for model, task in MODELS.items():
                request = codec.infer_request(model, INPUTS[task])
                kinds[f"{name} | {model}"] = partial(stub.ModelInfer, request, metadata=metadata)
        times = rotate(kinds, args.requests)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        receiver.stop(0)
    results = {kind: summary(samples) for kind, samples in times.items()}
    base = {model: results[f"tracing off | {model}"]["p50_ms"] for model in MODELS}
    print(f"spans received by the OTLP sink: {sink.spans}")
    print("| configuration | model | p50 (ms) | p99 (ms) | p50 / tracing off |\n|---|---|---|---|---|")
    for kind, r in results.items():
        name, model = kind.split(" | ")
        print(f"| {name} | {model} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p50_ms'] / base[model]:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
