"""Request-level dynamic batching vs iteration-level decode batching, in process (no gRPC).

N closed-loop clients on one event loop submit mixed traffic (sort-pointer with 5-15 values,
dates-additive with max_length 4-16, alternately) to the schedulers the server builds for them:
`serving.scheduler.Scheduler` (dynamic batching, no added delay) or `IterationScheduler`
(`decode_batching: iteration`), over ONNX Runtime. Modes alternate from round to round. Reports
requests/s, CPU time per request (this process, all threads), and for iteration-level the decoder
steps, their mean rows (occupancy) and the requests per admission. Figures are ratios from one run
on one machine, never asserted in tests.

    python benchmarks/decode_batching.py --repository model_repository --clients 32 --seconds 3 --rounds 2
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
    return IterationScheduler(
        name,
        pipeline,
        instrument,
        policy,
        executor,
        recorder.executions.append,
        recorder.steps,  # type: ignore[arg-type]
    )


async def closed_loop(mode: str, versions: dict[str, LoadedVersion], requests: dict[str, list[Prepared]],
                      clients: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    recorder = Recorder()
    with ThreadPoolExecutor(4) as executor:
        schedulers = {m: build(mode, v, executor, recorder) for m, v in versions.items()}
        answered = 0
        end = time.perf_counter() + seconds

        async def client(index: int) -> None:
            nonlocal answered
            for i in range(index, 10**9, clients):
                if time.perf_counter() >= end:
                    return
                model = MODELS[i % len(MODELS)]
                await schedulers[model].submit(requests[model][i % len(requests[model])])
                answered += 1

        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    row: dict[str, Any] = {"mode": mode, "clients": clients, "rps": answered / wall, "cpu_ms": 1e3 * cpu / answered}
    if recorder.step_rows:
        row |= {"steps": len(recorder.step_rows), "mean_rows": float(np.mean(recorder.step_rows)),
                "requests_per_admission": float(np.mean([e.requests for e in recorder.executions]))}  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
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
        for r in range(args.rounds):
            for mode in ("request", "iteration") if r % 2 == 0 else ("iteration", "request"):
                row = asyncio.run(closed_loop(mode, versions, requests, args.clients, args.seconds))
                runs.append({"round": r, **row})
                print(json.dumps(runs[-1]), flush=True)
    finally:
        repository.close()
    if args.json:
        args.json.write_text(json.dumps({"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
