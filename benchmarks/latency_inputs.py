"""The batch-1 request of each task that the latency benchmarks send (numpy only: no gRPC here)."""

from __future__ import annotations

import numpy as np

INPUTS: dict[str, dict[str, np.ndarray]] = {
    "translate": {"text": np.array([b"Freitag, 2. September 1983"], dtype=np.object_)},
    "classify": {
        "text": np.array(
            [
                b"real-time strategy game. Build an empire of seven kingdoms, trade and fight wars. "
                b"The game offers a campaign and multiplayer over the network."
            ],
            dtype=np.object_,
        )
    },
    "sort": {"values": np.array([[42, 7, 93, 15, 61, 3, 28, 77, 50, 12]], dtype=np.int64)},
}
