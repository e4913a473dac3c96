"""Batch-1 latency: the pipeline in process vs served over gRPC (ONNX Runtime, and torch).

One run, interleaved (in-process, served ORT, served torch, in turn per request) so machine
noise hits all three alike. The server runs in its own process on loopback, as in production.

    python benchmarks/serve_latency.py --repository model_repository --requests 300 \
        --markdown docs/performance.md --json runs/serve_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from backends.loader import get_backend
from serving.grpc import convert
from serving.grpc._gen.inference import grpc_service_pb2 as pb
from serving.grpc._gen.inference import grpc_service_pb2_grpc as pb_grpc
from serving.repository import ModelRepository

DEFAULT_MODELS = ["dates-additive", "dates-transformer", "debian-han", "sort-pointer"]
INPUTS: dict[str, dict[str, np.ndarray]] = {
    "translate": {"text": np.array([b"Freitag, 2. September 1983"], dtype=np.object_)},
    "classify": {
        "text": np.array(
            [
                b"real-time strategy game. Build an empire of seven kingdoms, trade and fight wars. "
                b"The game offers a campaign and multiplayer over the network."
            ],
            dtype=np.object_,
        )
    },
    "sort": {"values": np.array([[42, 7, 93, 15, 61, 3, 28, 77, 50, 12]], dtype=np.int64)},
}


def request(model: str, inputs: dict[str, np.ndarray], backend: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == np.object_ else "INT64"
        req.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        raw = convert.serialize_bytes(array) if datatype == "BYTES" else array.astype("<i8").tobytes()
        req.raw_input_contents.append(raw)
    req.parameters["backend"].string_param = backend
    return req


def start_server(repository: Path, port: int) -> tuple[subprocess.Popen, float]:
    """Start `attnserve serve`; return it and the seconds until it reported ready (every model loaded)."""
    cmd = [sys.executable, "-m", "serving.cli", "serve", "--repository", str(repository), "--grpc-port", str(port),
           "--metrics-port", "0"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "serving gRPC on port" in line:
            return proc, time.perf_counter() - t0
    raise RuntimeError("server exited before it was ready")


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "n": len(ms)}


def bench(repository: Path, models: list[str], requests: int, port: int) -> dict[str, Any]:
    load_average = os.getloadavg()[0]
    local = ModelRepository(repository, get_backend)
    proc, startup = start_server(repository, port)
    results: dict[str, Any] = {
        "startup_seconds": startup,
        "models_in_repository": len(local.available()),
        "load_average_at_start": load_average,
    }
    print(f"server ready after {startup:.2f} s with {len(local.available())} models", flush=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    per_model: dict[str, Any] = results.setdefault("models", {})
    floor = []
    for i in range(requests + 20):  # an empty RPC: what gRPC itself costs on this machine
        t0 = time.perf_counter()
        stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
        if i >= 20:
            floor.append(time.perf_counter() - t0)
    results["server_live_rpc"] = summary(floor)
    try:
        for name in models:
            loaded = local.load(name).versions
            version = loaded[max(loaded)]
            inputs = INPUTS[version.config.task]
            _, runners = version.runners("onnxruntime")
            reqs = {b: request(name, inputs, b) for b in ("onnxruntime", "torch")}
            times: dict[str, list[float]] = {"in_process": [], "served_onnxruntime": [], "served_torch": []}
            for i in range(requests + 20):  # the first 20 are warm-up
                t0 = time.perf_counter()
                version.pipeline.run(inputs, {}, runners)
                t1 = time.perf_counter()
                stub.ModelInfer(reqs["onnxruntime"], timeout=30)
                t2 = time.perf_counter()
                stub.ModelInfer(reqs["torch"], timeout=30)
                t3 = time.perf_counter()
                if i >= 20:
                    times["in_process"].append(t1 - t0)
                    times["served_onnxruntime"].append(t2 - t1)
                    times["served_torch"].append(t3 - t2)
            row = {k: summary(v) for k, v in times.items()}
            row["grpc_overhead_p50_ms"] = row["served_onnxruntime"]["p50_ms"] - row["in_process"]["p50_ms"]
            row["task"] = version.config.task
            row["attention"] = version.config.attention
            per_model[name] = row
            print(f"{name:<20} in-process {row['in_process']['p50_ms']:.3f} ms  served ORT "
                  f"{row['served_onnxruntime']['p50_ms']:.3f} ms  torch {row['served_torch']['p50_ms']:.3f} ms  "
                  f"overhead {row['grpc_overhead_p50_ms']:.3f} ms", flush=True)  # fmt: skip
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=30)
        local.close()
    return results


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Serving latency at batch 1",
        "",
        f"Measured by `{command}` on {platform.machine()} with {os.cpu_count()} cores "
        f"(Python {platform.python_version()}); load average at the start "
        f"{results['load_average_at_start']:.2f}. One run, interleaved per request: the pipeline in process "
        "(ONNX Runtime), the same request served over gRPC on loopback with ONNX Runtime, and with "
        "torch (`parameters.backend`). The gRPC overhead is served p50 minus in-process p50.",
        "",
        f"Start-up: the server was ready (all {results['models_in_repository']} models of the repository "
        f"loaded on both backends) {results['startup_seconds']:.2f} s after the process started. "
        f"An empty RPC (ServerLive) took p50 {results['server_live_rpc']['p50_ms']:.3f} ms: the floor of "
        "any served request on this machine.",
        "",
        "| model | task | attention | in-process p50 / p99 (ms) | served ORT p50 / p99 (ms) "
        "| served torch p50 / p99 (ms) | gRPC overhead p50 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        kinds = ("in_process", "served_onnxruntime", "served_torch")
        cells = [f"{r[k]['p50_ms']:.3f} / {r[k]['p99_ms']:.3f}" for k in kinds]
        lines.append(
            f"| {name} | {r['task']} | {r['attention']} | {' | '.join(cells)} | {r['grpc_overhead_p50_ms']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=18101)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = bench(args.repository, args.models.split(","), args.requests, args.port)
    command = "python benchmarks/serve_latency.py " + " ".join(sys.argv[1:])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(results, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
