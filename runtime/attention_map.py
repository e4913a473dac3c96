"""AttentionMap: what an attention plot shows. Torch-free, so clients can build and plot maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AttentionMap:
    """What a plot shows: rows attend over columns; `extra` holds family-specific maps."""

    rows: list[str]
    cols: list[str]
    weights: np.ndarray  # [len(rows), len(cols)]
    prediction: str
    extra: dict[str, Any] = field(default_factory=dict)
