"""Whether an int8 twin pays: its speed next to fp32's, measured at export, and the rule that keeps it.

ONNX Runtime's dynamic quantization makes the matrix products int8 but adds a quantize step per
activation; whether that is faster depends on the model (measured on the 2-core machine, in process:
dates-additive-int8 1.23x fp32 at batch 1, debian-han-int8 0.95x). So `attnserve export --quantize
int8` measures both pipelines on the same held-out requests, in interleaved rounds, and keeps the
twin only where it is faster by MIN_GAIN at batch 1 or 16 and its task metric within MAX_DROP.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from runtime.decode import Runner

MIN_GAIN = 0.10  # int8 must be at least 10 % faster (items/s) at batch 1 or batch 16 ...
MAX_DROP = 0.01  # ... and lose at most 1 point of the task metric (0-1 scale)
BATCHES = (1, 16)
ROUNDS = 5
ITEMS_PER_ROUND = 64  # per batch size and model, each round


class BatchSpeed(BaseModel):
    """Items/s of both pipelines at one batch size: medians over the rounds, and each round's ratio."""

    batch: int
    fp32_items_per_s: float
    int8_items_per_s: float
    ratio: float  # int8 / fp32: the median of the per-round ratios
    rounds: list[float]


class Int8Decision(BaseModel):
    keep: bool
    reason: str


def measure(
    fp32: tuple[Any, dict[str, Runner]],
    int8: tuple[Any, dict[str, Runner]],
    sources: Sequence[Any],
    batches: Sequence[int] = BATCHES,
    rounds: int = ROUNDS,
) -> list[BatchSpeed]:
    """Items/s of the fp32 and int8 (pipeline, runners) on `sources`, per batch size: `rounds`
    rounds in which both run the same requests, their order alternating (load hits both alike)."""
    out = []
    for batch in batches:
        requests = [inputs for _, inputs in fp32[0].requests(list(sources)[:ITEMS_PER_ROUND], batch)]
        items = sum(_rows(r) for r in requests)
        for pipeline, runners in (fp32, int8):  # warm-up
            pipeline.run(requests[0], {}, runners)
        fp: list[float] = []
        q: list[float] = []
        ratios: list[float] = []
        for i in range(rounds):
            order = [(fp32, fp), (int8, q)] if i % 2 == 0 else [(int8, q), (fp32, fp)]
            for (pipeline, runners), speeds in order:
                start = time.perf_counter()
                for inputs in requests:
                    pipeline.run(inputs, {}, runners)
                speeds.append(items / (time.perf_counter() - start))
            ratios.append(q[-1] / fp[-1])
        out.append(
            BatchSpeed(
                batch=batch,
                fp32_items_per_s=round(statistics.median(fp), 1),
                int8_items_per_s=round(statistics.median(q), 1),
                ratio=round(statistics.median(ratios), 3),
                rounds=[round(r, 3) for r in ratios],
            )
        )
    return out


def decide(speeds: Sequence[BatchSpeed], metric_fp32: float, metric_int8: float) -> Int8Decision:
    """Keep the twin when it is MIN_GAIN faster at some batch size and within MAX_DROP of fp32's metric."""
    speed = ", ".join(f"{s.ratio:.2f}x fp32 at batch {s.batch}" for s in speeds)
    drop = metric_fp32 - metric_int8
    if drop > MAX_DROP + 1e-9:  # (0.95 - 0.94 is 0.010000000000000009)
        return Int8Decision(keep=False, reason=f"its metric is {drop:.4f} below fp32's (more than {MAX_DROP}); {speed}")
    if not any(s.ratio >= 1 + MIN_GAIN - 1e-9 for s in speeds):
        return Int8Decision(keep=False, reason=f"not {MIN_GAIN:.0%} faster at any batch size: {speed}")
    return Int8Decision(keep=True, reason=f"{speed}; metric {metric_int8:.4f} vs fp32 {metric_fp32:.4f}")


def _rows(inputs: dict[str, Any]) -> int:
    return len(next(iter(inputs.values())))
