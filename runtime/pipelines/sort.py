"""sort: values INT64 [B, N] -> order INT64 [B, N] + attention FP32 [B, N, N] (pointer network)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np

from runtime.decode import DecodeLoop, greedy
from runtime.errors import InvalidInput
from runtime.pipelines.base import Outputs, Pipeline, Prepared, Runners, T
from runtime.stepwise import Plan


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

    def prepare(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Prepared:
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
        return Prepared(rows=values.shape[0], key=(), data=values)

    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
        # rows of different lengths share a batch: padding is masked out (exactly zero attention)
        feeds = self.encoder_feeds(batch)
        order, attn = greedy(cast(DecodeLoop, self.config.decode), runners["encoder"], runners["decoder_step"],
                             feeds, feeds["values"].shape[1])  # fmt: skip
        results, start = [], 0
        for p in batch:
            rows, n = slice(start, start + p.rows), p.data.shape[1]
            start += p.rows
            results.append(self.answer(p, order[rows, :n], attn[rows, :n, :n]))
        return results

    # --- the seam of iteration-level decoding (runtime.stepwise) ---------------------------

    def encoder_feeds(self, batch: Sequence[Prepared]) -> dict[str, np.ndarray]:
        """The encoder's inputs for every row of `batch`, padded to the longest."""
        width = max(p.data.shape[1] for p in batch)
        values = np.zeros((sum(p.rows for p in batch), width), dtype=np.int64)  # [B, N]
        mask = np.zeros(values.shape, dtype=bool)  # [B, N]
        start = 0
        for p in batch:
            n = p.data.shape[1]
            values[start : start + p.rows, :n] = p.data
            mask[start : start + p.rows, :n] = True
            start += p.rows
        return {"values": values, "src_mask": mask}

    def plan(self, prepared: Prepared) -> Plan:
        return Plan(beam=1, max_steps=prepared.data.shape[1])  # one position per value

    def source_lengths(self, prepared: Prepared) -> np.ndarray:
        return np.full(prepared.rows, prepared.data.shape[1], dtype=np.int64)

    def answer(self, prepared: Prepared, ids: np.ndarray, attn: np.ndarray) -> Outputs:
        """One request's outputs from its positions [n, N] and attention [n, N, N]."""
        return {"order": ids.astype(np.int64), "attention": attn.astype(np.float32)}
