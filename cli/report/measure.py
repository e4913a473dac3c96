"""Served latency for the report: a short closed-loop measurement over gRPC (one client, batch-1
held-out requests, the backends of a model interleaved request by request so that a noisy machine
weighs on each alike), or the percentiles a running server's /metrics histograms hold."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cli import stats
from cli.report.figures import ModelFigures
from client import Client
from runtime.percentiles import percentile

WARMUP = 3  # requests per backend before timing (sessions, caches, the first batch's allocations)
READY = re.compile(r"serving gRPC on port (\d+)")


class Latency(BaseModel):
    """Served latency of one model on one backend, in milliseconds."""

    model_config = ConfigDict(frozen=True)

    n: int
    p50_ms: float
    p99_ms: float
    source: str  # "measured" (client-side, this report) or "metrics" (the server's histograms)


@contextmanager
def local_server(repository: Path, timeout: float = 300.0) -> Iterator[str]:
    """`attnserve serve` over `repository` in a subprocess on a free port; yields its gRPC address.

    Its output is read all along by a thread (a full pipe would block the server) and shown when it
    does not start within `timeout` seconds."""
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository), "--host", "127.0.0.1",
           "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    port: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            found = READY.search(line)
            if found and not port:
                port.append(found.group(1))
                started.set()
        started.set()  # the server exited

    threading.Thread(target=read, daemon=True).start()
    try:
        if not started.wait(timeout) or not port:
            raise RuntimeError(f"the server did not start (exit {proc.poll()}):\n{''.join(log[-40:])}")
        yield f"127.0.0.1:{port[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentiles(seconds: Sequence[float], source: str = "measured") -> Latency:
    ms = np.asarray(seconds) * 1e3
    return Latency(n=len(ms), p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), source=source)


def measure(
    address: str, model: ModelFigures, requests: Sequence[Mapping[str, np.ndarray]], timeout: float = 60.0
) -> dict[str, Latency]:
    """Backend -> latency of `model` over `requests` (batch-1 inputs), each request sent to every
    backend in turn (the order alternating), after WARMUP untimed requests per backend."""
    times: dict[str, list[float]] = {b: [] for b in model.backends}
    with Client(address, timeout=timeout) as client:
        for backend in model.backends:
            for inputs in requests[:WARMUP]:
                client.infer(model.name, inputs, parameters={"backend": backend})
        for i, inputs in enumerate(requests):
            order = model.backends if i % 2 == 0 else tuple(reversed(model.backends))
            for backend in order:
                start = time.perf_counter()
                client.infer(model.name, inputs, parameters={"backend": backend})
                times[backend].append(time.perf_counter() - start)
    return {b: percentiles(t) for b, t in times.items()}


def from_metrics(text: str) -> dict[tuple[str, str], Latency]:
    """(model, backend) -> request latency percentiles from a server's /metrics text."""
    rows = stats.collect(text)
    found: dict[tuple[str, str], Latency] = {}
    for (model, _attention, backend, stage), r in rows.items():
        if stage == "request" and r["count"] > 0:
            found[(model, backend)] = Latency(
                n=int(r["count"]), p50_ms=r["p50"] * 1e3, p99_ms=r["p99"] * 1e3, source="metrics"
            )
    return found


def held_out_requests(
    figures: ModelFigures, checkpoints: Path, n: int, cache: dict[Any, list[Any]]
) -> list[dict[str, np.ndarray]]:
    """`n` batch-1 requests of the model's held-out inputs, as a client sends them; text inputs
    longer than the model accepts are left out (a location-based model reads 64 positions)."""
    from models import checkpoint  # torch: only for the inputs, never for serving
    from runtime.pipelines.factory import pipeline_class

    ck = checkpoint.load(checkpoints / figures.checkpoint)
    key = (type(ck.family), ck.recipe.train.seed)
    if key not in cache:
        cache[key] = type(ck.family).held_out(ck.recipe.train.seed, 4 * n)
    sources = [ck.family.source(ex) for ex in cache[key]]
    if figures.task == "translate":
        sources = [s for s in sources if len(s) <= figures.max_input_length]
    return [inputs for _, inputs in pipeline_class(figures.task).requests(sources[:n], 1)]
