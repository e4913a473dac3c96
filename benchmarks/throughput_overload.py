"""The overload scenarios of benchmarks/serve_throughput.py, against one attnserve server: slow
requests whose clients give up (the CPU the server spends afterwards, and how it counts them), and
a flood against a bounded queue (how fast the excess is refused, health latency meanwhile)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from throughput_inputs import requests
from throughput_servers import Server, cpu_seconds, prometheus, read_config, write_config

from runtime.percentiles import percentile


@dataclass(frozen=True)
class Overload:
    """The scenarios' sizes: the acceptance criteria's, or small ones for --quick."""

    abandoned: int = 50  # requests sent at once with `deadline_s`
    abandoned_texts: int = 64  # texts per request ...
    abandoned_beam: int = 16  # ... and beam: about a second of work each on the 2-core machine
    deadline_s: float = 0.01
    flood: int = 200  # requests sent at once against `queue`
    flood_texts: int = 8
    flood_beam: int = 8
    queue: int = 8


QUICK = Overload(abandoned=8, abandoned_texts=8, abandoned_beam=4, flood=24, flood_texts=4, flood_beam=4, queue=4)


def infer_inputs(arrays: dict[str, np.ndarray]) -> list[tc.InferInput]:
    out = []
    for name, array in arrays.items():
        inp = tc.InferInput(name, list(array.shape), "BYTES" if array.dtype == np.object_ else "INT64")
        inp.set_data_from_numpy(array)
        out.append(inp)
    return out


def slow_inputs(texts: int, beam: int) -> tuple[list[tc.InferInput], dict[str, Any]]:
    batch = np.concatenate([a["text"] for a in requests("translate", texts)])
    return infer_inputs({"text": batch}), {"beam_size": beam}


def status_name(exc: Exception) -> str:
    """The gRPC status name of a tritonclient error ("StatusCode.X" -> "X")."""
    status = exc.status() if isinstance(exc, tc.InferenceServerException) else None
    return str(status or type(exc).__name__).removeprefix("StatusCode.")


async def _statistics(client: tc.InferenceServerClient, model: str) -> dict[str, int]:
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    inference = stats.get("inference_stats", {})
    return {
        "fail": int(inference.get("fail", {}).get("count", 0)),
        "success": int(inference.get("success", {}).get("count", 0)),
    }


def _prometheus_codes(server: Server, model: str) -> Counter:
    """attnserve_requests_total of `model` by code (other labels summed); model "": calls whose
    model is unknown (they ended before their body was read, or named no model)."""
    out: Counter = Counter()
    for labels, value in prometheus(server, "attnserve_requests_total").items():
        fields = dict(labels)
        if fields.get("model") == model:
            out[fields.get("code", "")] += int(value)
    return out


async def abandoned(server: Server, model: str, size: Overload) -> dict[str, Any]:
    """`size.abandoned` slow requests at once with a deadline of `size.deadline_s`: the CPU the
    server spends after every client gave up (until its CPU time stops growing), and what
    ModelStatistics and Prometheus counted."""
    pid = server.proc.pid
    async with tc.InferenceServerClient(server.url) as client:
        inputs, params = slow_inputs(size.abandoned_texts, size.abandoned_beam)
        stats_before, prom_before = await _statistics(client, model), _prometheus_codes(server, model)
        unread_before = _prometheus_codes(server, "")

        async def one() -> str:
            try:
                await client.infer(model, inputs, parameters=params, client_timeout=size.deadline_s)
                return "OK"
            except Exception as exc:
                return status_name(exc)

        codes = Counter(await asyncio.gather(*(one() for _ in range(size.abandoned))))
        gave_up = last = cpu_seconds(pid)
        give_up_at = time.monotonic()
        while time.monotonic() - give_up_at < 120:  # until the server is idle
            await asyncio.sleep(0.5)
            now = cpu_seconds(pid)
            if now - last < 0.02:
                break
            last = now
        await asyncio.sleep(0.5)  # a request's record is written as it ends
        stats_after, prom_after = await _statistics(client, model), _prometheus_codes(server, model)
        unread_after = _prometheus_codes(server, "")
    prom = {code: n - prom_before.get(code, 0) for code, n in prom_after.items() if n != prom_before.get(code, 0)}
    # calls that ended before the server read their body: no model to count them under (serving/grpc/intake.py)
    unread = {code: n - unread_before.get(code, 0) for code, n in unread_after.items()}
    unread = {code: n for code, n in unread.items() if n}
    return {
        "requests": size.abandoned,
        "texts": size.abandoned_texts,
        "beam": size.abandoned_beam,
        "deadline_ms": size.deadline_s * 1e3,
        "client_codes": dict(codes),
        "cpu_seconds_after_clients_left": last - gave_up,
        "statistics_fail": stats_after["fail"] - stats_before["fail"],
        "statistics_success": stats_after["success"] - stats_before["success"],
        "prometheus_codes": prom,
        "prometheus_unread_codes": unread,
    }


def _probe_health(url: str, service: str, interval: float, stop: Any, out: Any) -> None:
    """In a process of its own (so the flood's client work does not delay it): a gRPC health check
    every `interval` s until `stop` is set; puts "ready" after the first, then the latencies."""
    import grpc

    with grpc.insecure_channel(url) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        out.put("ready")
        latencies = []
        while not stop.is_set():
            t0 = time.perf_counter()
            check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            latencies.append(time.perf_counter() - t0)
            time.sleep(interval)
    out.put(latencies)


async def flood(server: Server, model: str, size: Overload) -> dict[str, Any]:
    """`size.flood` slow requests at once against `dynamic_batching.max_queue_size: size.queue`
    (written into the server's copy of config.yaml and loaded, restored afterwards): latency of the
    refusals and of the answers, client-side, and of gRPC health checks sent every 20 ms meanwhile
    from another process."""
    model_dir = server.repository / model
    config = read_config(model_dir)
    bounded = {**config, "dynamic_batching": {**(config.get("dynamic_batching") or {}), "max_queue_size": size.queue}}
    context = multiprocessing.get_context("spawn")
    stop, out = context.Event(), context.Queue()
    async with tc.InferenceServerClient(server.url) as client:
        write_config(model_dir, bounded)
        try:
            await client.load_model(model)
            inputs, params = slow_inputs(size.flood_texts, size.flood_beam)
            refused: list[float] = []
            answered: list[float] = []
            other: Counter = Counter()

            async def one() -> None:
                t0 = time.perf_counter()
                try:
                    await client.infer(model, inputs, parameters=params, client_timeout=300)
                    answered.append(time.perf_counter() - t0)
                except Exception as exc:
                    status = status_name(exc)
                    if status == "RESOURCE_EXHAUSTED":
                        refused.append(time.perf_counter() - t0)
                    else:
                        other[status] += 1

            prober = context.Process(target=_probe_health, args=(server.url, model, 0.02, stop, out), daemon=True)
            prober.start()
            try:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, out.get, True, 120)  # "ready"
                await asyncio.gather(*(one() for _ in range(size.flood)))
                stop.set()
                checks: list[float] = await loop.run_in_executor(None, out.get, True, 60)
            finally:
                stop.set()
                prober.join(timeout=10)
                if prober.is_alive():
                    prober.kill()
        finally:
            write_config(model_dir, config)
            await client.load_model(model)
    ms = lambda xs, q: percentile(xs, q) * 1e3  # noqa: E731
    return {
        "queue": size.queue, "requests": size.flood, "texts": size.flood_texts, "beam": size.flood_beam,
        "refused": len(refused), "answered": len(answered), "other": dict(other),
        "refused_p50_ms": ms(refused, 50), "refused_p99_ms": ms(refused, 99), "refused_max_ms": ms(refused, 100),
        "answered_p99_ms": ms(answered, 99), "health_checks": len(checks), "health_p50_ms": ms(checks, 50),
        "health_p99_ms": ms(checks, 99), "health_max_ms": ms(checks, 100),
    }  # fmt: skip
