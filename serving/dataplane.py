"""The transport-neutral request path: find the model, run its pipeline in a worker thread, time it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import InvalidInput, ServingError
from serving.repository import LoadedVersion, ModelRepository
from serving.stats import StatsRegistry


@dataclass
class InferResult:
    model: LoadedVersion
    backend: str
    outputs: dict[str, np.ndarray]


class DataPlane:
    """Runs inference requests; the gRPC servicers only convert to and from protobuf."""

    def __init__(self, repository: ModelRepository, executor: ThreadPoolExecutor, stats: StatsRegistry) -> None:
        self.repository = repository
        self.executor = executor
        self.stats = stats

    async def infer(
        self,
        name: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any],
        requested: Iterable[str] = (),
    ) -> InferResult:
        """Run one request. `requested` names outputs to return (empty: all of them)."""
        model = self.repository.get(name, version)
        requested = list(requested)
        known = [t.name for t in model.pipeline.outputs]
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise InvalidInput(f"model '{name}' has no output(s) {unknown}; it offers {known}")
        if len(set(requested)) != len(requested):
            raise InvalidInput(f"output(s) requested twice: {requested}")
        backend = params.get("backend")
        if backend is not None and not isinstance(backend, str):
            raise InvalidInput(f"parameter 'backend' must be a string, got {backend!r}")
        backend_name, runners = model.runners(backend)
        queued = time.perf_counter_ns()
        loop = asyncio.get_running_loop()

        def work() -> tuple[dict[str, np.ndarray], int, int]:
            started = time.perf_counter_ns()
            outputs = model.pipeline.run(inputs, params, runners)
            return outputs, started, time.perf_counter_ns()

        batch = int(next(iter(inputs.values())).shape[0]) if inputs and next(iter(inputs.values())).ndim else 0
        try:
            outputs, started, finished = await loop.run_in_executor(self.executor, work)
        except ServingError:
            self.stats.record(model.config.name, model.version, False, batch, time.perf_counter_ns() - queued)
            raise
        selected = {k: outputs[k] for k in requested} if requested else outputs
        done = time.perf_counter_ns()
        self.stats.record(
            model.config.name, model.version, True, batch, done - queued,
            queue_ns=started - queued, infer_ns=finished - started, output_ns=done - finished,
        )  # fmt: skip
        return InferResult(model=model, backend=backend_name, outputs=selected)
