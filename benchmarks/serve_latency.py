"""Batch-1 latency: the pipeline in process vs served over gRPC (ONNX Runtime, and torch).

One run, in rotating blocks (BLOCK requests in process, then served ORT, served torch, an empty
RPC, and a bare gRPC handler running the same pipeline, again and again) so machine
noise hits all of them alike while each runs back to back, as under steady traffic
(alternating every request would evict the in-process pipeline's caches and inflate it). The
server runs in its own process on loopback, as in production.

    python benchmarks/serve_latency.py --repository model_repository --requests 300 \
        --markdown docs/performance.md --json runs/serve_latency.json

`--baseline DIR` also serves the repository from another attnserve checkout (for example
`git worktree add runs/baseline <commit>`) in the same rotation, for a before/after ratio taken in
one run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from latency_inputs import INPUTS
from markdown_section import write_section

from backends.loader import get_backend
from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.percentiles import percentile
from serving.repository import ModelRepository

BLOCK = 10  # requests of one kind in a row
DEFAULT_MODELS = ["dates-additive", "dates-transformer", "debian-han", "sort-pointer"]


def request(model: str, inputs: dict[str, np.ndarray], backend: str) -> pb.ModelInferRequest:
    return codec.infer_request(model, inputs, params={"backend": backend})


def spawn(cmd: list[str], ready: str, **popen: Any) -> tuple[subprocess.Popen, int]:
    """Start `cmd`; return it and the port from its first stdout line matching `ready` (one group).
    The rest of its output is read (and dropped) by a thread: a full pipe would block the server."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(ready, line)
        if match:
            threading.Thread(target=collections.deque, args=(proc.stdout, 0), daemon=True).start()
            return proc, int(match.group(1))
    raise RuntimeError(f"{cmd[1]} exited before it was ready")


def start_server(repository: Path, port: int, tree: Path | None = None) -> tuple[subprocess.Popen, int, float]:
    """Start `attnserve serve` (from checkout `tree`, default this one); return it, its port and the
    seconds until it was ready (every model loaded)."""
    root = tree or Path(__file__).resolve().parents[1]
    module = "cli.main" if (root / "cli" / "main.py").is_file() else "serving.cli"  # checkouts before cli/
    cmd = [sys.executable, "-m", module, "serve", "--repository", str(repository.resolve()),
           "--grpc-port", str(port), "--metrics-port", "0"]  # fmt: skip
    env = dict(os.environ, ATTNSERVE_HTTP__PORT="0")  # no fixed HTTP port (a flag older checkouts lack)
    if tree is not None:
        env["PYTHONPATH"] = str(tree.resolve())  # its packages before the installed ones
    t0 = time.perf_counter()
    proc, bound = spawn(cmd, r"serving gRPC on port (\d+)", cwd=tree, env=env)
    return proc, bound, time.perf_counter() - t0


def start_bare_server(repository: Path, models: list[str]) -> tuple[subprocess.Popen, int]:
    """benchmarks/bare_server.py in its own process; return it and its port."""
    cmd = [sys.executable, str(Path(__file__).with_name("bare_server.py")), "--repository", str(repository),
           "--models", ",".join(models), "--port", "0"]  # fmt: skip
    return spawn(cmd, r"bare server on port (\d+)")


def commit_of(tree: Path) -> str:
    """The checkout's commit (short), with '+changes' when its tracked files differ from it."""
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], check=False).returncode != 0
    return head.stdout.strip() + ("+changes" if dirty else "")


def context_switches(pid: int) -> int | None:
    """Voluntary + involuntary context switches of every thread of `pid` so far (Linux /proc)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:  # voluntary_ and nonvoluntary_
                    total += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return total


def switches_per_call(pid: int, call: Callable[[], object], n: int = 500) -> float | None:
    """The server's thread switches per call: a count, steadier than time on a noisy machine."""
    before = context_switches(pid)
    for _ in range(n):
        call()
    after = context_switches(pid)
    return None if before is None or after is None else (after - before) / n


def summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms)}


def rotate(kinds: dict[str, Callable[[], object]], requests: int) -> dict[str, list[float]]:
    """Seconds per call of each kind, run in rotating blocks of BLOCK calls (two warm-up rounds first)."""
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(2):
        for fn in kinds.values():
            for _ in range(BLOCK):
                fn()
    for _ in range(max(1, requests // BLOCK)):
        for kind, fn in kinds.items():
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                fn()
                times[kind].append(time.perf_counter() - t0)
    return times


def bench(
    repository: Path,
    models: list[str],
    requests: int,
    port: int,
    baseline: Path | None = None,
    baseline_repository: Path | None = None,
) -> dict[str, Any]:
    load_average = os.getloadavg()[0]
    local = ModelRepository(repository, get_backend)
    servers: list[subprocess.Popen] = []
    channels: list[grpc.Channel] = []
    try:
        proc, port, startup = start_server(repository, port)
        servers.append(proc)
        channels.append(grpc.insecure_channel(f"127.0.0.1:{port}"))
        stub = pb_grpc.GRPCInferenceServiceStub(channels[0])
        bare, bare_port = start_bare_server(repository, models)
        servers.append(bare)
        channels.append(grpc.insecure_channel(f"127.0.0.1:{bare_port}"))
        bare_stub = pb_grpc.GRPCInferenceServiceStub(channels[-1])
        base_stub = None
        if baseline is not None:
            base_proc, base_port, _ = start_server(baseline_repository or repository, 0, baseline)
            servers.append(base_proc)
            channels.append(grpc.insecure_channel(f"127.0.0.1:{base_port}"))
            base_stub = pb_grpc.GRPCInferenceServiceStub(channels[-1])
        results: dict[str, Any] = {
            "commit": commit_of(Path(__file__).resolve().parents[1]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "baseline": str(baseline) if baseline else None,
            "baseline_commit": commit_of(baseline) if baseline else None,
            "startup_seconds": startup,
            "models_in_repository": len(local.available()),
            "load_average_at_start": load_average,
            "models": {},
        }
        print(f"server ready after {startup:.2f} s with {len(local.available())} models", flush=True)
        floor: list[float] = []
        for name in models:
            loaded = local.load(name).versions
            row = measure_model(loaded[max(loaded)], stub, bare_stub, base_stub, requests)
            floor += row.pop("server_live_seconds")
            results["models"][name] = row
            print(f"{name:<20} in-process {row['in_process']['p50_ms']:.3f} ms  served ORT "
                  f"{row['served_onnxruntime']['p50_ms']:.3f} ms  torch {row['served_torch']['p50_ms']:.3f} ms  "
                  f"overhead {row['grpc_overhead_p50_ms']:.3f} ms (empty RPC {row['server_live_p50_ms']:.3f} ms)",
                  flush=True)  # fmt: skip
        results["server_live_rpc"] = summary(floor)
        live = pb.ServerLiveRequest()
        results["switches_per_empty_rpc"] = switches_per_call(proc.pid, partial(stub.ServerLive, live))
        if base_stub is not None:
            results["baseline_switches_per_empty_rpc"] = switches_per_call(
                servers[-1].pid, partial(base_stub.ServerLive, live)
            )
        return results
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        local.close()


def measure_model(version: Any, stub: Any, bare_stub: Any, base_stub: Any | None, requests: int) -> dict[str, Any]:
    """One model's rotation: in process, served (ORT, torch), an empty RPC, the bare server running
    the same pipeline, and the baseline's ORT."""
    name = version.config.name
    inputs = INPUTS[version.config.task]
    _, runners = version.runners("onnxruntime")
    kinds: dict[str, Callable[[], object]] = {
        "in_process": partial(version.pipeline.run, inputs, {}, runners),
        "served_onnxruntime": partial(stub.ModelInfer, request(name, inputs, "onnxruntime"), timeout=30),
        "served_torch": partial(stub.ModelInfer, request(name, inputs, "torch"), timeout=30),
        "server_live": partial(stub.ServerLive, pb.ServerLiveRequest(), timeout=10),  # an empty RPC: the floor
        "bare_grpc": partial(bare_stub.ModelReady, pb.ModelReadyRequest(name=name), timeout=30),
    }
    if base_stub is not None:
        kinds["baseline_onnxruntime"] = partial(base_stub.ModelInfer, request(name, inputs, "onnxruntime"), timeout=30)
    times = rotate(kinds, requests)
    live_times = times.pop("server_live")
    row: dict[str, Any] = {k: summary(v) for k, v in times.items()}
    row["grpc_overhead_p50_ms"] = row["served_onnxruntime"]["p50_ms"] - row["in_process"]["p50_ms"]
    # what serving a model adds over an empty RPC measured in the same blocks
    row["server_live_p50_ms"] = summary(live_times)["p50_ms"]
    row["above_floor_p50_ms"] = row["grpc_overhead_p50_ms"] - row["server_live_p50_ms"]
    # a bare grpc.aio handler running the same pipeline: what attnserve adds is the difference
    row["bare_grpc_overhead_p50_ms"] = row["bare_grpc"]["p50_ms"] - row["in_process"]["p50_ms"]
    row["over_bare_grpc_p50_ms"] = row["served_onnxruntime"]["p50_ms"] - row["bare_grpc"]["p50_ms"]
    if base_stub is not None:
        base = row["baseline_onnxruntime"]["p50_ms"]
        row["baseline_overhead_p50_ms"] = base - row["in_process"]["p50_ms"]
        row["served_vs_baseline"] = row["served_onnxruntime"]["p50_ms"] / base
    row["task"] = version.config.task
    row["attention"] = version.config.attention
    row["server_live_seconds"] = live_times
    return row


def markdown(results: dict[str, Any], command: str) -> str:
    switches = ""
    if results.get("switches_per_empty_rpc") is not None:
        switches = f" The server's threads switched {results['switches_per_empty_rpc']:.1f} times per empty RPC"
        if results.get("baseline_switches_per_empty_rpc") is not None:
            switches += f" (the baseline's: {results['baseline_switches_per_empty_rpc']:.1f})"
        switches += "."
    lines = [
        "# Serving latency at batch 1",
        "",
        f"Measured by `{command}` on {results.get('date', 'an unrecorded date')} at commit {results['commit']} "
        f"on {platform.machine()} with {os.cpu_count()} cores "
        f"(Python {platform.python_version()}); load average at the start "
        f"{results['load_average_at_start']:.2f}. One run, in rotating blocks of {BLOCK} requests: the "
        "pipeline in process (ONNX Runtime), the same request served over gRPC on loopback with ONNX "
        "Runtime, with torch (`parameters.backend`), and an empty RPC (ServerLive). The gRPC overhead "
        "is served p50 minus in-process p50; *above the empty RPC* subtracts the empty RPC's p50 from "
        "the same blocks, leaving what serving a model adds to the transport's own round trip.",
        "",
        f"Start-up: the server was ready (all {results['models_in_repository']} models of the repository "
        f"loaded on both backends) {results['startup_seconds']:.2f} s after the process started. "
        f"An empty RPC (ServerLive) took p50 {results['server_live_rpc']['p50_ms']:.3f} ms over the whole "
        f"run: the floor of any served request on this machine.{switches}",
        "",
        "| model | task | attention | in-process p50 / p99 (ms) | served ORT p50 / p99 (ms) "
        "| served torch p50 / p99 (ms) | gRPC overhead p50 (ms) | empty RPC p50 (ms) | above the empty RPC (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        kinds = ("in_process", "served_onnxruntime", "served_torch")
        cells = [f"{r[k]['p50_ms']:.3f} / {r[k]['p99_ms']:.3f}" for k in kinds]
        lines.append(
            f"| {name} | {r['task']} | {r['attention']} | {' | '.join(cells)} | {r['grpc_overhead_p50_ms']:.3f} "
            f"| {r['server_live_p50_ms']:.3f} | {r['above_floor_p50_ms']:.3f} |"
        )
    lines += [
        "",
        "Against `benchmarks/bare_server.py` in the same rotation: a bare grpc.aio handler that runs the",
        "same pipeline on the same input, with no tensor conversion, validation, metrics or statistics.",
        "Its overhead is what Python gRPC and a server process cost on this machine; the last column",
        "is what attnserve adds to it.",
        "",
        "| model | bare server p50 (ms) | bare server's overhead p50 (ms) | attnserve's overhead p50 (ms) "
        "| attnserve over the bare server (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        lines.append(
            f"| {name} | {r['bare_grpc']['p50_ms']:.3f} | {r['bare_grpc_overhead_p50_ms']:.3f} "
            f"| {r['grpc_overhead_p50_ms']:.3f} | {r['over_bare_grpc_p50_ms']:.3f} |"
        )
    if results.get("baseline"):
        lines += [
            "",
            f"Against a baseline server run from `{results['baseline']}`, a checkout of commit "
            f"{results['baseline_commit']} (`git worktree add {results['baseline']} {results['baseline_commit']}`), "
            "in the same rotation, ONNX Runtime:",
            "",
            "| model | gRPC overhead p50 (ms) | baseline's gRPC overhead p50 (ms) | served p50, this / baseline |",
            "|---|---|---|---|",
        ]
        for name, r in results["models"].items():
            lines.append(
                f"| {name} | {r['grpc_overhead_p50_ms']:.3f} | {r['baseline_overhead_p50_ms']:.3f} "
                f"| {r['served_vs_baseline']:.3f} |"
            )
    lines += [
        "",
        "How to read it: the empty RPC is the transport's own round trip, client and server both Python",
        "gRPC, and on a 2-core virtual machine most of it is threads handing work to each other (the",
        "switch counts above). It varies several-fold between machines of the same kind and from one",
        "minute to the next, so compare the columns of one run, not figures across runs.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=18101, help="the server's gRPC port (0: any free port)")
    parser.add_argument("--markdown", type=Path, help="write the section 'serve_latency' of this file")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline", type=Path, help="another attnserve checkout to serve and compare against")
    parser.add_argument(
        "--baseline-repository",
        type=Path,
        help="the repository the baseline serves, exported by the baseline's own code when the "
        "repository format changed between them (default: --repository)",
    )
    args = parser.parse_args()
    results = bench(
        args.repository, args.models.split(","), args.requests, args.port, args.baseline, args.baseline_repository
    )
    command = "python benchmarks/serve_latency.py " + " ".join(sys.argv[1:])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        write_section(args.markdown, "serve_latency", markdown(results, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
