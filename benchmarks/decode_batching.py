"""Request-level dynamic batching vs iteration-level decode batching, in process (no gRPC).

N closed-loop clients (or, with --rate, requests arriving at that rate whether or not the earlier
ones are answered) on one event loop submit mixed traffic (sort-pointer with 5-15 values,
dates-additive with max_length 4-16, alternately) to the schedulers the server builds for them:
`serving.scheduler.Scheduler` (dynamic batching, no added delay) or `IterationScheduler`
(`decode_batching: iteration`; `iteration@1`: newcomers join before every decoder step), over ONNX
Runtime. The order of the modes rotates from round to round. Reports requests/s, CPU time per
request (this process, all threads), latency p50 / p99 (submit to answer; p50 per model too), and
for iteration-level the decoder steps, their mean rows (occupancy) and the requests per admission;
then the ratios of the modes, per round and their median. Figures are ratios from one run
on one machine, never asserted in tests.

    python benchmarks/decode_batching.py --repository model_repository --clients 32 --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from backends.loader import get_backend
from runtime.percentiles import percentile
from runtime.pipelines.base import Prepared, bytes_tensor
from serving.repository import LoadedVersion, ModelRepository
from serving.scheduler import Calls, Execution, IterationScheduler, Policy, Scheduler

MODELS = ("dates-additive", "sort-pointer")
DATES = [f"{d}. September 19{d + 50}" for d in range(1, 29)] + ["donderdag 23 december 2010", "14 de março 2003"]


def prepared_requests(version: LoadedVersion, n: int, seed: int) -> list[Prepared]:
    rng = np.random.default_rng(seed)
    pipeline = version.pipeline
    if version.config.task == "translate":
        return [
            pipeline.prepare({"text": bytes_tensor([DATES[i % len(DATES)]])}, {"max_length": int(rng.integers(4, 17))})
            for i in range(n)
        ]
    return [
        pipeline.prepare({"values": rng.choice(100, size=(1, int(rng.integers(5, 16))), replace=False)}, {})
        for _ in range(n)
    ]


class Recorder:
    """What the schedulers report: admissions (iteration-level) or batches, and decoder steps."""

    def __init__(self) -> None:
        self.executions: list[Execution] = []
        self.step_rows: list[int] = []

    def steps(self, rows: list[int], calls: Calls) -> None:
        self.step_rows += rows


def build(mode: str, version: LoadedVersion, executor: ThreadPoolExecutor, recorder: Recorder) -> Any:
    """`mode`: "request", or "iteration" (as the model's config says), or "iteration@K" (newcomers
    join a decoding batch at most K decoder steps apart; 1: before every step)."""
    _, runners = version.runners("onnxruntime")

    def instrument(calls: Calls) -> dict[str, Any]:
        def timed(runner: Any) -> Any:
            def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                start = time.perf_counter_ns()
                out = runner(feeds)
                calls.append((None, start, time.perf_counter_ns()))
                return out

            return run

        return {name: timed(runner) for name, runner in runners.items()}

    policy = Policy(max_batch_size=version.config.max_batch_size, batching=True, concurrency=1)
    name, pipeline = version.config.name, version.pipeline
    if mode == "request":
        return Scheduler(name, pipeline, instrument, policy, executor, recorder.executions.append)
    scheduler = IterationScheduler(
        name,
        pipeline,
        instrument,
        policy,
        executor,
        recorder.executions.append,
        recorder.steps,  # type: ignore[arg-type]
    )
    if "@" in mode:
        steps = int(mode.partition("@")[2])
        scheduler.joins = scheduler.joins.model_copy(update={"max_waiting_steps": steps})
    return scheduler


async def timed_submit(schedulers: dict[str, Any], requests: dict[str, list[Prepared]],
                       latencies: dict[str, list[float]], i: int) -> None:  # fmt: skip
    """Submit request `i` (the models alternating) and record its latency in ms, submit to answer."""
    model = MODELS[i % len(MODELS)]
    sent = time.perf_counter()
    await schedulers[model].submit(requests[model][i % len(requests[model])])
    latencies[model].append(1e3 * (time.perf_counter() - sent))


async def closed_loop(mode: str, versions: dict[str, LoadedVersion], requests: dict[str, list[Prepared]],
                      clients: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    recorder = Recorder()
    with ThreadPoolExecutor(4) as executor:
        schedulers = {m: build(mode, v, executor, recorder) for m, v in versions.items()}
        latencies: dict[str, list[float]] = {m: [] for m in versions}  # ms, submit to answer
        end = time.perf_counter() + seconds

        async def client(index: int) -> None:
            for i in range(index, 10**9, clients):
                if time.perf_counter() >= end:
                    return
                await timed_submit(schedulers, requests, latencies, i)

        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return summary({"mode": mode, "clients": clients}, latencies, wall, cpu, recorder)


async def open_loop(mode: str, versions: dict[str, LoadedVersion], requests: dict[str, list[Prepared]],
                    rate: float, seconds: float, seed: int) -> dict[str, Any]:  # fmt: skip
    """Requests arrive at `rate` per second (Poisson, the models alternating), whether or not the
    earlier ones are answered: the latency a request meets at that load."""
    recorder = Recorder()
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=int(rate * seconds * 2) + 16)
    with ThreadPoolExecutor(4) as executor:
        schedulers = {m: build(mode, v, executor, recorder) for m, v in versions.items()}
        latencies: dict[str, list[float]] = {m: [] for m in versions}
        cpu, start = time.process_time(), time.perf_counter()
        tasks, due = [], start
        for i, gap in enumerate(gaps):
            due += gap
            if due >= start + seconds:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.ensure_future(timed_submit(schedulers, requests, latencies, i)))
        await asyncio.gather(*tasks)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return summary({"mode": mode, "rate": rate}, latencies, wall, cpu, recorder)


def summary(
    row: dict[str, Any], latencies: dict[str, list[float]], wall: float, cpu: float, recorder: Recorder
) -> dict[str, Any]:
    every = np.concatenate([np.asarray(v) for v in latencies.values()])
    row |= {
        "rps": len(every) / wall,
        "cpu_ms": 1e3 * cpu / len(every),
        "p50_ms": percentile(every, 50),
        "p99_ms": percentile(every, 99),
    }
    row |= {f"p50_ms_{m}": percentile(v, 50) for m, v in latencies.items() if v}  # fmt: skip
    if recorder.step_rows:
        row |= {"steps": len(recorder.step_rows), "mean_rows": float(np.mean(recorder.step_rows)),
                "requests_per_admission": float(np.mean([e.requests for e in recorder.executions]))}  # fmt: skip
    return row


def ratios(runs: list[dict[str, Any]], modes: list[str]) -> list[str]:
    """Each later mode over each earlier one, per round, and the median of the rounds."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for row in runs:
        by_round.setdefault(row["round"], {})[row["mode"]] = row
    lines = []
    for i, a in enumerate(modes):
        for b in modes[:i]:
            for key in ("rps", "p50_ms", "p99_ms", "cpu_ms"):
                per_round = [r[a][key] / r[b][key] for r in by_round.values()]
                rounds = ", ".join(f"{x:.2f}" for x in per_round)
                lines.append(f"{key} {a} / {b}: median {float(np.median(per_round)):.2f} (rounds {rounds})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--modes",
        default="request,iteration@1,iteration",
        help="request, iteration (as config.yaml says) or iteration@K (see build)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: requests per second arriving (Poisson) instead of --clients closed-loop clients",
    )
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    repository = ModelRepository(args.repository, get_backend)
    try:
        versions = {}
        for model in MODELS:
            loaded = repository.load(model).versions
            versions[model] = loaded[max(loaded)]
        requests = {m: prepared_requests(v, 64, seed=i) for i, (m, v) in enumerate(versions.items())}
        runs = []
        modes = args.modes.split(",")
        for r in range(args.rounds):
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:  # the order rotates
                if args.rate:
                    row = asyncio.run(open_loop(mode, versions, requests, args.rate, args.seconds, seed=r))
                else:
                    row = asyncio.run(closed_loop(mode, versions, requests, args.clients, args.seconds))
                runs.append({"round": r, **row})
                print(json.dumps(runs[-1]), flush=True)
    finally:
        repository.close()
    for line in ratios(runs, modes):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
