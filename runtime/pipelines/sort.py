"""sort: values INT64 [B, N] -> order INT64 [B, N] + attention FP32 [B, N, N] (pointer network)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from runtime.decode import greedy
from runtime.errors import InvalidInput
from runtime.pipelines.base import Pipeline, Runners, T


class SortPipeline(Pipeline):
    """The pointer network's attention over the inputs is the output: one position per step."""

    task = "sort"
    inputs = (T("values", "int64", "batch", "values"),)
    outputs = (T("order", "int64", "batch", "values"), T("attention", "float32", "batch", "steps", "src_len"))

    @classmethod
    def requests(cls, sources: Sequence[Any], batch: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """Rows of one length per request (a request is a [B, N] tensor)."""
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(sources):
            by_length.setdefault(len(row), []).append(i)
        for _, positions in sorted(by_length.items()):
            for start in range(0, len(positions), batch):
                rows = positions[start : start + batch]
                yield rows, {"values": np.array([sources[i] for i in rows], dtype=np.int64)}  # [B, N]

    @classmethod
    def answers(cls, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        return [tuple(int(p) for p in row if p >= 0) for row in outputs["order"]]

    def check_shape(self, name: str, shape: Sequence[int]) -> None:
        """The row length within max_input_length (on the header, before any value is read)."""
        n = shape[1]
        if not 1 <= n <= self.config.max_input_length:
            raise InvalidInput(
                f"input 'values' has {n} values per row; this model takes 1 to {self.config.max_input_length}"
            )

    def run(
        self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], runners: Runners
    ) -> dict[str, np.ndarray]:
        self.check_inputs(inputs)
        self.check_params(params)
        values = np.asarray(inputs["values"])
        n = values.shape[1]  # within max_input_length (check_shape)
        low, high = self.config.value_range or (0, np.iinfo(np.int64).max)
        if values.min() < low or values.max() >= high:
            raise InvalidInput(f"values must lie in [{low}, {high}), got min {values.min()} and max {values.max()}")
        for i, row in enumerate(values):
            if len(set(row.tolist())) != n:
                raise InvalidInput(f"row {i} of 'values' has repeated values; the model sorts distinct integers")
        mask = np.ones(values.shape, dtype=bool)
        order, attn = greedy(self.config.decode, runners["encoder"], runners["decoder_step"],
                             {"values": values, "src_mask": mask}, n)  # fmt: skip
        return {"order": order.astype(np.int64), "attention": attn.astype(np.float32)}
