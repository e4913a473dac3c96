"""Throughput under concurrency: closed-loop clients sending batch-1 requests over gRPC.

One run, in interleaved rounds: per workload (dates-additive, debian-han, and a mixed workload of
sort-pointer and dates-additive with varied max_length) and number of clients (1, 8, 32, 64),
attnserve with batching off, with request-level dynamic batching and with iteration-level
decoding (each its own server on its own copy of the repository, config.yaml edited), MLServer
1.7.1 with adaptive batching serving the same ONNX graphs through attnserve's task code
(benchmarks/mlserver_runtime.py, from a venv of its own under runs/), the in-process batched
limit (the pipeline on a batch of that many items, no server) and the empty-RPC ceiling
(ServerLive). Clients are tritonclient.grpc.aio, in this process; every server runs in its own
process on loopback, and only the one measured is busy. Then the overload scenarios: slow
requests whose 10 ms deadline passes (the server's CPU afterwards, from /proc; the counts from
ModelStatistics and Prometheus), and 200 slow requests against a queue of 8. Last, the acceptance
criteria of benchmarks/throughput_report.py, pass or fail. About 10 minutes on the 2-core machine
(3 rounds of 3 s cells), plus a few minutes the first time, to create the MLServer venv:

    python benchmarks/serve_throughput.py --markdown docs/performance.md --json runs/serve_throughput.json

`--quick` (a few seconds of load, no MLServer, small overload scenarios) checks that it all runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlserver_setup
import throughput_overload as overload
import throughput_servers as servers
import tritonclient.grpc.aio as tc
from loadgen import closed_loop
from markdown_section import write_section
from serve_latency import commit_of
from throughput_inputs import mixed, requests
from throughput_report import criteria, criteria_table, markdown

from backends.loader import get_backend
from runtime.config import CONFIG_FILE, ModelConfig
from serving.repository import LoadedVersion, ModelRepository

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 8, 32, 64)
MLSERVER_BATCH, MLSERVER_BATCH_TIME = 32, 0.002  # max_batch_size, max_batch_time (s)
Request = tuple[str, list[tc.InferInput], dict[str, Any]]  # model, inputs, parameters


@dataclass(frozen=True)
class Workload:
    """What the clients send, and to which servers."""

    name: str
    models: tuple[str, ...]
    modes: tuple[str, ...]  # the servers measured, in the first round's order

    def requests(self, repository: Path) -> list[Request]:
        if self.name == "mixed":
            return [(m, overload.infer_inputs(x), p) for m, x, p in mixed()]
        model = self.models[0]
        task = ModelConfig.load(repository / model / CONFIG_FILE).task
        return [(model, overload.infer_inputs(x), {}) for x in requests(task)]


WORKLOADS = {
    w.name: w
    for w in (
        Workload("dates-additive", ("dates-additive",), ("off", "dynamic", "iteration", "mlserver")),
        Workload("debian-han", ("debian-han",), ("off", "dynamic", "mlserver")),
        # no MLServer: its adaptive batcher concatenates inputs, and sorts of different lengths are not
        Workload("mixed", ("sort-pointer", "dates-additive"), ("off", "dynamic", "iteration")),
    )
}


# --- the sweep ---------------------------------------------------------------------------------


def in_process_limit(loaded: LoadedVersion, batch: int, seconds: float) -> float:
    """Items/s of the pipeline run on batches of `batch` distinct items, no server."""
    _, runners = loaded.runners("onnxruntime")
    inputs = requests(loaded.config.task)
    prepared = [loaded.pipeline.prepare(inputs[i % len(inputs)], {}) for i in range(batch)]
    loaded.pipeline.execute(prepared, runners)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loaded.pipeline.execute(prepared, runners)
        done += batch
    return done / (time.perf_counter() - start)


def _infer(client: tc.InferenceServerClient, calls: list[Request]) -> Callable:
    async def call(i: int) -> Any:
        model, inputs, params = calls[i % len(calls)]
        return await client.infer(model, inputs, parameters=params or None, client_timeout=60)

    return call


async def sweep(urls: dict[str, str], repository: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (round, clients, workload, mode) measurement, the modes' order rotated between rounds."""
    clients = {mode: tc.InferenceServerClient(url) for mode, url in urls.items()}
    workloads = [WORKLOADS[w] for w in args.workloads]
    calls = {w.name: w.requests(repository) for w in workloads}
    local = ModelRepository(repository, get_backend)
    single = [w for w in workloads if len(w.models) == 1]
    loaded = {w.name: local.load(w.models[0]).versions for w in single}
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            for n in args.clients:
                load = await closed_loop(lambda i, c=clients["dynamic"]: c.is_server_live(), n, args.seconds,
                                         args.warmup)  # fmt: skip
                runs.append({"round": r, "workload": "", "mode": "empty", **load.as_dict()})
                for w in workloads:
                    modes = [m for m in w.modes if m in clients]
                    for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                        load = await closed_loop(_infer(clients[mode], calls[w.name]), n, args.seconds, args.warmup)
                        runs.append({"round": r, "workload": w.name, "mode": mode, **load.as_dict()})
                        print(f"round {r} {w.name:<15} {mode:<9} {n:>2} clients: {load.rps:7.0f} req/s  "
                              f"p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  errors {load.errors}",
                              flush=True)  # fmt: skip
                    if w.name in loaded:
                        versions = loaded[w.name]
                        items = in_process_limit(versions[max(versions)], n, min(args.seconds, 1.0))
                        runs.append({"round": r, "workload": w.name, "mode": "in_process", "clients": n,
                                     "rps": items, "requests": 1, "errors": 0})  # fmt: skip
    finally:
        for client in clients.values():
            await client.close()
        local.close()
    return runs


# --- the run ----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")  # fmt: skip
    return f"{platform.machine()} with {os.cpu_count()} cores ({cpu}; Linux {platform.release()}; Python " \
           f"{platform.python_version()})"  # fmt: skip


def start_servers(args: argparse.Namespace, models: list[str]) -> tuple[dict[str, servers.Server], dict[str, str]]:
    """One attnserve server per mode on its own repository copy; the modes whose models do not all
    load are stopped and reported unavailable (mode -> the reasons)."""
    started: dict[str, servers.Server] = {}
    unavailable: dict[str, str] = {}
    try:
        for mode in servers.SERVER_MODES:
            if mode == "iteration" and not any("iteration" in WORKLOADS[w].modes for w in args.workloads):
                continue
            copy = servers.copy_repository(args.repository, args.work / f"repository-{mode}", models, mode)
            server = servers.start(mode, copy, models, args.work / f"attnserve-{mode}.log")
            started[mode] = server
            problems = asyncio.run(servers.not_ready(server, models))
            if problems:
                if mode != "iteration":
                    raise RuntimeError(f"attnserve ({mode}) did not load {problems}; see {server.log}")
                unavailable[mode] = _reasons(problems)
                print(f"{mode}: unavailable ({unavailable[mode]})", flush=True)
                started.pop(mode).stop()
    except BaseException:
        for server in started.values():
            server.stop()
        raise
    return started, unavailable


def _reasons(problems: dict[str, str]) -> str:
    """Models' reasons on one line each, models with the same reason together (pydantic's links dropped)."""
    by_reason: dict[str, list[str]] = {}
    for model, why in problems.items():
        lines = [line.strip() for line in why.splitlines() if line.strip() and "errors.pydantic.dev" not in line]
        by_reason.setdefault(" ".join(lines), []).append(model)
    return "; ".join(f"{', '.join(models)}: {why}" for why, models in by_reason.items())


def bench(args: argparse.Namespace) -> dict[str, Any]:
    models = sorted({m for w in args.workloads for m in WORKLOADS[w].models})
    ml_models = sorted({m for w in args.workloads if "mlserver" in WORKLOADS[w].modes for m in WORKLOADS[w].models})
    load_average = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    mlserver = None
    started, unavailable = start_servers(args, models)
    try:
        urls = {mode: s.url for mode, s in started.items()}
        if not args.no_mlserver and ml_models:
            exe = mlserver_setup.ensure_venv(args.mlserver_venv)
            folder = args.work / "mlserver-models"
            port = mlserver_setup.write_models(folder, args.repository, ml_models, MLSERVER_BATCH, MLSERVER_BATCH_TIME)
            log = args.work / "mlserver.log"
            mlserver = mlserver_setup.start(exe, folder, log)
            urls["mlserver"] = f"127.0.0.1:{port}"
            mlserver_setup.wait_ready(lambda: _ready(urls["mlserver"], ml_models), mlserver, log)
        results: dict[str, Any] = {
            "command": "python benchmarks/serve_throughput.py " + " ".join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit_of(ROOT),
            "machine": machine(),
            "load_average_at_start": load_average,
            "rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup, "clients": list(args.clients),
            "workloads": args.workloads,
            "modes": sorted(urls),
            "unavailable": unavailable,
            "mlserver": None if "mlserver" not in urls else {
                "venv": str(args.mlserver_venv), "max_batch_size": MLSERVER_BATCH,
                "max_batch_time_s": MLSERVER_BATCH_TIME},
        }  # fmt: skip
        t0 = time.perf_counter()
        results["runs"] = asyncio.run(sweep(urls, args.repository, args))
        results["sweep_seconds"] = time.perf_counter() - t0
        if mlserver is not None:
            mlserver_setup.stop(mlserver)
            mlserver = None
        if not args.no_overload and "dates-additive" in models:
            size = overload.QUICK if args.quick else overload.Overload()
            results["abandoned"] = {
                mode: asyncio.run(overload.abandoned(server, "dates-additive", size))
                for mode, server in started.items()
            }
            results["flood"] = asyncio.run(overload.flood(started["dynamic"], "dates-additive", size))
        return results
    finally:
        if mlserver is not None:
            mlserver_setup.stop(mlserver)
        for server in started.values():
            server.stop()


def _ready(url: str, models: list[str]) -> bool:
    async def check() -> bool:
        async with tc.InferenceServerClient(url) as client:
            return all([await client.is_model_ready(m) for m in models])

    return asyncio.run(check())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {list(WORKLOADS)}")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="numbers of concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before each cell's window")
    parser.add_argument("--work", type=Path, default=Path("runs/serve_throughput"),
                        help="repository copies, server logs, MLServer's model folder")  # fmt: skip
    parser.add_argument("--mlserver-venv", type=Path, default=Path("runs/mlserver-venv"))
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--no-overload", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="check that it all runs: 1 round of 0.2 s cells at 1 and 32 clients, no MLServer, "
                             "small overload scenarios")  # fmt: skip
    parser.add_argument("--markdown", type=Path, help="write the section 'serve_throughput' of this file")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.workloads = args.workloads.split(",")
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {list(WORKLOADS)}")
    args.clients = [int(n) for n in args.clients.split(",")]
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.clients, args.no_mlserver = 1, 0.2, 0.2, [1, 32], True
    return args


def main() -> int:
    args = parse()
    results = bench(args)
    results["criteria"] = [c.as_dict() for c in criteria(results)]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        write_section(args.markdown, "serve_throughput", markdown(results))
    print("\n".join(criteria_table(criteria(results))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
