"""Latency percentiles: one definition for the benchmarks and `attnserve report`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The `q`-th percentile (0..100) of `values`, linear between the closest ranks (numpy's
    default); 0.0 for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in 0..100, got {q}")
    array = np.asarray(values, dtype=np.float64)
    return float(np.percentile(array, q)) if array.size else 0.0
