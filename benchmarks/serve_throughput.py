"""Throughput under concurrency: closed-loop clients sending batch-1 requests over gRPC.

Per model and number of clients (1, 8, 32, 64), in interleaved rounds of one run: attnserve with
batching off, attnserve with dynamic batching (config.yaml as exported), MLServer 1.7.1 with
adaptive batching serving the same ONNX graphs through attnserve's task code
(benchmarks/mlserver_runtime.py, from a venv of its own under runs/), the in-process batched limit
(the pipeline on a batch of that many items, no server) and the empty-RPC ceiling (ServerLive).
Clients are tritonclient.grpc.aio, in this process; every server runs in its own process on
loopback, and only the one measured is busy. Then two overload scenarios on the attnserve servers:
50 slow requests with a 10 ms deadline (the CPU the server spends after its clients gave up) and
200 slow requests against a queue of 8 (how fast the excess is refused, health latency meanwhile).

    python benchmarks/serve_throughput.py --repository model_repository \\
        --markdown docs/performance.md --json runs/serve_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlserver_setup
import numpy as np
import tritonclient.grpc.aio as tc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loadgen import closed_loop, percentile
from markdown_section import write_section
from serve_latency import commit_of, spawn
from throughput_inputs import requests

from backends.loader import get_backend
from serving.repository import LoadedVersion, ModelRepository

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 8, 32, 64)
DEFAULT_MODELS = ["dates-additive", "debian-han"]
MODES = ("off", "dynamic", "mlserver")
LABELS = {
    "off": "attnserve, batching off",
    "dynamic": "attnserve, dynamic batching",
    "mlserver": "MLServer 1.7.1, adaptive batching",
    "in_process": "in-process batched limit (items/s at batch = clients)",
    "empty": "empty-RPC ceiling (ServerLive)",
}
MLSERVER_BATCH, MLSERVER_BATCH_TIME = 32, 0.002  # max_batch_size, max_batch_time (s)


def infer_inputs(arrays: dict[str, np.ndarray]) -> list[tc.InferInput]:
    out = []
    for name, array in arrays.items():
        inp = tc.InferInput(name, list(array.shape), "BYTES" if array.dtype == np.object_ else "INT64")
        inp.set_data_from_numpy(array)
        out.append(inp)
    return out


def start_attnserve(repository: Path, models: list[str]) -> tuple[subprocess.Popen, int]:
    """`attnserve serve` from this checkout, loads allowed (the benchmark reconfigures models); (process,
    gRPC port)."""
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository.resolve()), "--host",
           "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--models", ",".join(models),
           "--model-control-mode", "explicit"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return spawn(cmd, r"serving gRPC on port (\d+)", cwd=ROOT, env=env)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def sweep(
    urls: dict[str, str], repository: Path, models: list[str], rounds: int, seconds: float
) -> dict[str, Any]:
    """Every (round, clients, model, mode) measurement, modes rotated from round to round."""
    clients = {mode: tc.InferenceServerClient(url) for mode, url in urls.items()}
    local = ModelRepository(repository, get_backend)
    loaded = {m: local.load(m).versions for m in models}
    inputs = {m: [infer_inputs(x) for x in requests(_task(repository, m))] for m in models}
    runs: list[dict[str, Any]] = []
    modes = [m for m in MODES if m in clients]
    try:
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for n in CLIENTS:
                empty = clients["dynamic"]
                load = await closed_loop(lambda i, c=empty: c.is_server_live(), n, seconds)
                runs.append({"round": r, "model": "", "mode": "empty", **load.as_dict()})
                for model in models:
                    for mode in order:
                        load = await closed_loop(_infer(clients[mode], model, inputs[model]), n, seconds)
                        runs.append({"round": r, "model": model, "mode": mode, **load.as_dict()})
                        print(f"round {r} {model:<16} {mode:<9} {n:>2} clients: {load.rps:7.0f} req/s  "
                              f"p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  errors {load.errors}",
                              flush=True)  # fmt: skip
                    items = in_process_limit(loaded[model][max(loaded[model])], n, min(seconds, 1.0))
                    runs.append({"round": r, "model": model, "mode": "in_process", "clients": n, "rps": items})
    finally:
        for client in clients.values():
            await client.close()
        local.close()
    return {"runs": runs}


def _task(repository: Path, model: str) -> str:
    match = re.search(r"^task: (\w+)$", (repository / model / "config.yaml").read_text(), re.M)
    assert match, f"{model}: no task in config.yaml"
    return match.group(1)


def _infer(client: tc.InferenceServerClient, model: str, inputs: list[list[tc.InferInput]]) -> Callable:
    async def call(i: int) -> Any:
        return await client.infer(model, inputs[i % len(inputs)], client_timeout=60)

    return call


# --- overload ------------------------------------------------------------------------------------


def slow_inputs(texts: int, beam: int) -> tuple[list[tc.InferInput], dict[str, Any]]:
    arrays = requests("translate", texts)
    batch = np.concatenate([a["text"] for a in arrays])
    return infer_inputs({"text": batch}), {"beam_size": beam}


async def abandoned(url: str, pid: int, model: str) -> dict[str, Any]:
    """50 requests of about a second each (64 texts, beam 16) at once with a 10 ms deadline: the CPU
    the server spends after every client gave up, until it is idle again."""
    async with tc.InferenceServerClient(url) as client:
        inputs, params = slow_inputs(64, 16)
        before = await _failures(client, model)

        async def one() -> str:
            try:
                await client.infer(model, inputs, parameters=params, client_timeout=0.01)
                return "OK"
            except Exception as exc:
                return _status(exc)

        codes = Counter(await asyncio.gather(*(one() for _ in range(50))))
        gave_up = cpu_seconds(pid)
        last = gave_up
        while True:  # until the server is idle: its CPU time stops growing
            await asyncio.sleep(0.5)
            now = cpu_seconds(pid)
            if now - last < 0.02:
                break
            last = now
        after = await _failures(client, model)
    return {
        "client_codes": dict(codes),
        "cpu_seconds_after_clients_left": last - gave_up,
        "server_counted": {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)},
    }


def _status(exc: Exception) -> str:
    """The gRPC status name of a tritonclient error ("StatusCode.X" -> "X")."""
    status = exc.status() if isinstance(exc, tc.InferenceServerException) else None
    return str(status or type(exc).__name__).removeprefix("StatusCode.")


async def _failures(client: tc.InferenceServerClient, model: str) -> dict[str, int]:
    """ModelStatistics' failures of `model` (all codes together) and successes."""
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    inference = stats.get("inference_stats", {})
    return {
        "fail": int(inference.get("fail", {}).get("count", 0)),
        "success": int(inference.get("success", {}).get("count", 0)),
        "executions": int(stats.get("execution_count", 0)),
    }


async def flood(url: str, model: str, queue: int = 8, requests_: int = 200) -> dict[str, Any]:
    """`requests_` slow requests at once (8 texts, beam 8) against a queue of `queue`: latency of the
    refusals, of the answers, and of gRPC health checks sent every 20 ms meanwhile."""
    async with tc.InferenceServerClient(url) as client, aio.insecure_channel(url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await client.load_model(model, config=json.dumps({"dynamic_batching": {"max_queue_size": queue}}))
        inputs, params = slow_inputs(8, 8)
        refused: list[float] = []
        answered: list[float] = []
        other: Counter = Counter()

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                await client.infer(model, inputs, parameters=params, client_timeout=300)
                answered.append(time.perf_counter() - t0)
            except Exception as exc:
                status = _status(exc)
                if status == "RESOURCE_EXHAUSTED":
                    refused.append(time.perf_counter() - t0)
                else:
                    other[status] += 1

        calls = [asyncio.ensure_future(one()) for _ in range(requests_)]
        checks: list[float] = []
        while not all(c.done() for c in calls):
            t0 = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(service=model), timeout=10)
            checks.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
        await client.load_model(model)  # config.yaml again
    ms = lambda xs, q: percentile(xs, q) * 1e3  # noqa: E731
    return {
        "queue": queue, "requests": requests_, "refused": len(refused), "answered": len(answered),
        "other": dict(other), "refused_p50_ms": ms(refused, 0.5), "refused_p99_ms": ms(refused, 0.99),
        "answered_p99_ms": ms(answered, 0.99), "health_checks": len(checks), "health_p50_ms": ms(checks, 0.5),
        "health_p99_ms": ms(checks, 0.99), "health_max_ms": max(checks, default=0) * 1e3,
    }  # fmt: skip


# --- the run ----------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    models = args.models.split(",")
    load_average = os.getloadavg()[0]
    servers: list[subprocess.Popen] = []
    mlserver: subprocess.Popen | None = None
    try:
        dynamic, dynamic_port = start_attnserve(args.repository, models)
        servers.append(dynamic)
        off, off_port = start_attnserve(args.repository, models)
        servers.append(off)
        urls = {"dynamic": f"127.0.0.1:{dynamic_port}", "off": f"127.0.0.1:{off_port}"}
        asyncio.run(_batching_off(urls["off"], models))
        if not args.no_mlserver:
            exe = mlserver_setup.ensure_venv(args.mlserver_venv)
            folder = args.mlserver_venv.parent / "mlserver-models"
            port = mlserver_setup.write_models(folder, args.repository, models, MLSERVER_BATCH, MLSERVER_BATCH_TIME)
            log = args.mlserver_venv.parent / "mlserver.log"
            mlserver = mlserver_setup.start(exe, folder, log)
            urls["mlserver"] = f"127.0.0.1:{port}"
            mlserver_setup.wait_ready(lambda: _ready(urls["mlserver"], models), mlserver, log)
        results: dict[str, Any] = {
            "commit": commit_of(ROOT),
            "command": "python benchmarks/serve_throughput.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()} with {os.cpu_count()} cores (Python {platform.python_version()})",
            "load_average_at_start": load_average,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "models": models,
            "mlserver": None if args.no_mlserver else {
                "max_batch_size": MLSERVER_BATCH, "max_batch_time_s": MLSERVER_BATCH_TIME},
        }  # fmt: skip
        results.update(asyncio.run(sweep(urls, args.repository, models, args.rounds, args.seconds)))
        if not args.no_overload and "dates-additive" in models:
            results["abandoned"] = {
                mode: asyncio.run(abandoned(urls[mode], proc.pid, "dates-additive"))
                for mode, proc in (("dynamic", dynamic), ("off", off))
            }
            results["flood"] = asyncio.run(flood(urls["dynamic"], "dates-additive"))
        return results
    finally:
        if mlserver is not None:
            mlserver_setup.stop(mlserver)
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)


async def _batching_off(url: str, models: list[str]) -> None:
    async with tc.InferenceServerClient(url) as client:
        for model in models:
            await client.load_model(model, config=json.dumps({"dynamic_batching": None}))


def _ready(url: str, models: list[str]) -> bool:
    async def check() -> bool:
        async with tc.InferenceServerClient(url) as client:
            return all([await client.is_model_ready(m) for m in models])

    return asyncio.run(check())


# --- summaries ----------------------------------------------------------------------------------------


def cell(runs: list[dict[str, Any]], model: str, mode: str, clients: int) -> list[dict[str, Any]]:
    return [r for r in runs if r["model"] == model and r["mode"] == mode and r["clients"] == clients]


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs) if runs else float("nan")


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's acceptance figures, per round (the servers measured back to back) and their median."""
    runs = results["runs"]

    def per_round(model: str, clients: int, key: str, mode: str, versus: str) -> list[float]:
        out = []
        for r in range(results["rounds"]):
            a = [x for x in cell(runs, model, mode, clients) if x["round"] == r]
            b = [x for x in cell(runs, model, versus, clients) if x["round"] == r]
            if a and b and b[0][key]:
                out.append(a[0][key] / b[0][key])
        return out

    wanted = [
        ("dates-additive", 32, "rps", "off", ">= 1.6"),
        ("dates-additive", 32, "rps", "mlserver", ">= 1.3"),
        ("dates-additive", 32, "p99_ms", "off", "<= 0.6"),
        ("dates-additive", 1, "p50_ms", "off", "<= 1.1"),
        ("dates-additive", 1, "p50_ms", "mlserver", "<= 0.6"),
        ("debian-han", 32, "rps", "off", ">= 1.3"),
    ]
    out = []
    for model, clients, key, versus, target in wanted:
        values = per_round(model, clients, key, "dynamic", versus)
        if values:
            what = {"rps": "throughput", "p99_ms": "p99", "p50_ms": "p50"}[key]
            plural = "s" * (clients > 1)
            out.append({
                "figure": f"{model}, {clients} client{plural}: {what}, dynamic batching / {LABELS[versus]}",
                "target": target, "rounds": values, "median": statistics.median(values),
            })  # fmt: skip
    return out


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    lines = [
        "# Throughput under concurrency",
        "",
        f"Measured by `{results['command']}` at commit {results['commit']} on {results['machine']}; load "
        f"average at the start {results['load_average_at_start']:.2f}. {results['rounds']} rounds; in each, "
        f"every number of clients and model runs each server in turn for {results['seconds']:g} s after a "
        "0.5 s warm-up (the order rotates between rounds), so machine noise hits them alike. Closed loop: "
        "each client (tritonclient.grpc.aio, all in the benchmark's process, on the same 2 cores as the "
        "servers) sends its next batch-1 request when the previous one is answered; the inputs vary "
        "(`benchmarks/throughput_inputs.py`). Cells: requests/s, p50 / p99 ms (medians over the rounds).",
        "",
    ]
    if results.get("mlserver"):
        m = results["mlserver"]
        lines += [
            f"MLServer 1.7.1 (its own venv under runs/) serves the same ONNX graphs through attnserve's task "
            f"code (`benchmarks/mlserver_runtime.py`) with adaptive batching: max_batch_size {m['max_batch_size']}, "
            f"max_batch_time {m['max_batch_time_s'] * 1e3:g} ms, its other settings default.",
            "",
        ]
    for model in results["models"]:
        lines += [f"**{model}**", "", "| server | " + " | ".join(f"{n} client{'s' * (n > 1)}" for n in CLIENTS) + " |",
                  "|---|" + "---|" * len(CLIENTS)]  # fmt: skip
        for mode in (*MODES, "in_process"):
            cells = []
            for n in CLIENTS:
                c = cell(runs, model, mode, n)
                if not c:
                    cells.append("")
                elif mode == "in_process":
                    cells.append(f"{median(c, 'rps'):.0f} items/s")
                else:
                    cells.append(f"{median(c, 'rps'):.0f} / {median(c, 'p50_ms'):.2f} / {median(c, 'p99_ms'):.2f}")
            if any(cells):
                lines.append(f"| {LABELS[mode]} | " + " | ".join(cells) + " |")
        lines.append("")
    empty = [f"{n}: {median(cell(runs, '', 'empty', n), 'rps'):.0f}" for n in CLIENTS]
    lines += [f"Empty-RPC ceiling (ServerLive requests/s by clients): {', '.join(empty)}.", ""]
    figures = ratios(results)
    if figures:
        lines += ["Acceptance figures of issue 10 (ratio per round; median):", "",
                  "| figure | target | per round | median |", "|---|---|---|---|"]  # fmt: skip
        for f in figures:
            per = ", ".join(f"{v:.2f}" for v in f["rounds"])
            lines.append(f"| {f['figure']} | {f['target']} | {per} | {f['median']:.2f} |")
        lines.append("")
    if "abandoned" in results:
        lines += ["Overload, dates-additive:", ""]
        for mode, a in results["abandoned"].items():
            lines.append(
                f"- 50 requests of about 1 s (64 texts, beam 16) at once with a 10 ms deadline, {LABELS[mode]}: "
                f"clients got {a['client_codes']}; the server spent {a['cpu_seconds_after_clients_left']:.2f} CPU s "
                f"after they gave up; ModelStatistics counted {a['server_counted']}."
            )
        f = results["flood"]
        lines.append(
            f"- {f['requests']} requests (8 texts, beam 8) at once against max_queue_size {f['queue']}: "
            f"{f['refused']} refused with RESOURCE_EXHAUSTED (p50 {f['refused_p50_ms']:.1f} ms, p99 "
            f"{f['refused_p99_ms']:.1f} ms client-side), {f['answered']} answered, other {f['other']}; "
            f"{f['health_checks']} gRPC health checks meanwhile: p50 {f['health_p50_ms']:.1f} ms, p99 "
            f"{f['health_p99_ms']:.1f} ms, max {f['health_max_ms']:.1f} ms."
        )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--mlserver-venv", type=Path, default=Path("runs/mlserver-venv"))
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--no-overload", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write the section 'serve_throughput' of this file")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = bench(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        write_section(args.markdown, "serve_throughput", markdown(results))
    for f in ratios(results):
        print(f"{f['figure']}: {f['median']:.2f} (target {f['target']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
