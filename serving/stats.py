"""Per-model inference statistics in Triton's shape (counts and nanoseconds), for ModelStatistics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class ModelStats:
    """Triton's InferStatistics fields: success/fail (whole request), queue, compute_input/infer/output.

    `failures` splits `fail` by status code (the `code` of attnserve_requests_total).
    """

    inference_count: int = 0  # items (batch rows) inferred
    execution_count: int = 0  # batches executed (several requests may share one)
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batch_sizes: dict[int, Duration] = field(default_factory=dict)  # executed batch size -> compute_infer
    failures: dict[str, Duration] = field(default_factory=dict)  # status code -> failed requests


class StatsRegistry:
    """Thread-safe statistics keyed by (model, version); owned by the app, not global."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, int], ModelStats] = {}

    def record(
        self,
        model: str,
        version: int,
        code: str,
        total_ns: int,
        queue_ns: int = 0,
        input_ns: int = 0,
        infer_ns: int = 0,
        output_ns: int = 0,
    ) -> None:
        """One request that ended with status `code` ("OK" or an error code's name); the stage
        durations count for successful requests only, as in Triton (a batched request counts its
        batch's compute)."""
        with self._lock:
            s = self._stats.setdefault((model, version), ModelStats())
            if code != "OK":
                s.fail.add(total_ns)
                s.failures.setdefault(code, Duration()).add(total_ns)
                return
            s.success.add(total_ns)
            s.last_inference_ms = int(time.time() * 1000)
            s.queue.add(queue_ns)
            s.compute_input.add(input_ns)
            s.compute_infer.add(infer_ns)
            s.compute_output.add(output_ns)

    def record_execution(self, model: str, version: int, batch: int, infer_ns: int) -> None:
        """One executed batch of `batch` items: execution_count + 1, inference_count + batch."""
        with self._lock:
            s = self._stats.setdefault((model, version), ModelStats())
            s.inference_count += batch
            s.execution_count += 1
            s.batch_sizes.setdefault(batch, Duration()).add(infer_ns)

    def forget(self, model: str, keep: Iterable[int] = ()) -> None:
        """Drop the statistics of `model`'s versions but `keep` (those it serves now)."""
        kept = set(keep)
        with self._lock:
            for key in [k for k in self._stats if k[0] == model and k[1] not in kept]:
                del self._stats[key]

    def snapshot(self) -> dict[tuple[str, int], ModelStats]:
        import copy

        with self._lock:
            return copy.deepcopy(self._stats)
