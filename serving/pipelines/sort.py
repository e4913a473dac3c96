"""sort: values INT64 [B, N] -> order INT64 [B, N] + attention FP32 [B, N, N] (pointer network)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.errors import InvalidInput
from serving.pipelines.base import Pipeline, Runners, TensorMeta
from serving.pipelines.decode import greedy


class SortPipeline(Pipeline):
    """The pointer network's attention over the inputs is the output: one position per step."""

    task = "sort"
    inputs = (TensorMeta("values", "INT64", (-1, -1)),)
    outputs = (TensorMeta("order", "INT64", (-1, -1)), TensorMeta("attention", "FP32", (-1, -1, -1)))

    def run(
        self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], runners: Runners
    ) -> dict[str, np.ndarray]:
        self.check_inputs(inputs)
        self.check_params(params)
        values = np.asarray(inputs["values"])
        n = values.shape[1]
        if not 1 <= n <= self.config.max_input_length:
            raise InvalidInput(
                f"input 'values' has {n} values per row; this model takes 1 to {self.config.max_input_length}"
            )
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
