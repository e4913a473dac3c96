"""tensors: a graph's own named tensors in and out, as Triton serves an ONNX model.

The request tensors are the graph's inputs (every protocol datatype it uses), the response
tensors its outputs. With `max_batch_size` > 0 the first axis of every tensor is the batch:
requests whose per-item shapes are equal run as one batch, concatenated along it and split back.
An input with `pad: {axis, value}` may differ in length along that axis between requests of one
batch: each is padded with `value` to the longest, and the output axes `crop` names are cut back
to the request's own length (the graph must mask the padding, e.g. through a mask or lengths
input, for the answer to equal the request's answer alone). With `max_batch_size` 0 the graph has
no batch axis and each request runs as sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.autocomplete import COMPONENT, check_pad
from runtime.config import ModelConfig
from runtime.errors import InvalidInput, InvalidModelConfig
from runtime.pipelines.base import Outputs, Pipeline, Prepared, Runners
from runtime.tensors import TensorSpec


class TensorsPipeline(Pipeline):
    """Named tensors through one graph (`components: {model: ...}`), batched by Triton's rule."""

    task = "tensors"
    # a model's own tensors, set per instance from its graph (the other pipelines' are the task's)
    inputs: tuple[TensorSpec, ...] = ()  # type: ignore[misc]
    outputs: tuple[TensorSpec, ...] = ()  # type: ignore[misc]

    def __init__(self, config: ModelConfig, version_dir: Path) -> None:
        if list(config.components) != [COMPONENT]:
            raise InvalidModelConfig(
                f"model '{config.name}': task tensors serves one component named '{COMPONENT}', "
                f"config.yaml lists {sorted(config.components)}"
            )
        graph = config.components[COMPONENT]
        self.inputs, self.outputs = graph.inputs, graph.outputs  # this model's own, not the class's
        super().__init__(config, version_dir)
        self.batched = config.max_batch_size > 0
        check_pad(config.name, self.inputs, config.pad)
        ranks = {t.name: t.rank for t in self.outputs}
        for name, axes in config.crop.items():
            if name not in ranks or any(not 1 <= a < ranks[name] for a in axes):
                raise InvalidModelConfig(
                    f"model '{config.name}': crop {name}: {axes} must name an output and axes past the batch "
                    f"(outputs and ranks: {ranks})"
                )
        dtypes = {t.name: t.dtype for t in self.inputs}
        for name, p in config.pad.items():
            if isinstance(p.value, str) and dtypes[name] != "bytes":
                raise InvalidModelConfig(
                    f"model '{config.name}': pad value {p.value!r} of input '{name}' is text, but the input is "
                    f"{dtypes[name]}"
                )
        self.pad = {name: (p.axis, p.value) for name, p in config.pad.items()}
        self.crop = {name: list(axes) for name, axes in config.crop.items()}

    @classmethod
    def answers(cls, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """One {output name: row} per batch item."""
        rows = len(next(iter(outputs.values()))) if outputs else 0
        return [{name: array[i] for name, array in outputs.items()} for i in range(rows)]

    def config_dims(self, spec: TensorSpec) -> list[int]:
        """Triton's `dims`: without the batch axis when the model batches."""
        return list(spec.shape[1:] if self.batched else spec.shape)

    def _check_shape(self, name: str, rank: int, meta: TensorSpec, shape: Sequence[int]) -> None:
        if len(shape) != rank:
            raise InvalidInput(f"input '{name}' must have {self._expected(meta)}, got shape {list(shape)}")
        first = 0
        if self.batched:
            first = 1
            if shape[0] == 0:
                raise InvalidInput(f"input '{name}' is empty: send at least one item")
            if shape[0] > self.config.max_batch_size:
                raise InvalidInput(
                    f"input '{name}' has batch {shape[0]}, over max_batch_size {self.config.max_batch_size}"
                )
        for axis in range(first, rank):
            want = meta.axes[axis]
            if isinstance(want, int) and shape[axis] != want:
                raise InvalidInput(
                    f"input '{name}' axis {axis} must be {want} ({self._expected(meta)}), got shape {list(shape)}"
                )

    def _expected(self, meta: TensorSpec) -> str:
        shape = list(meta.shape)
        return f"shape {shape} (axis 0 the batch, -1 any size)" if self.batched else f"shape {shape} (-1 any size)"

    def prepare(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Prepared:
        self.check_inputs(inputs)
        self.check_params(params)
        arrays = {t.name: np.asarray(inputs[t.name]) for t in self.inputs}
        if not self.batched:
            return Prepared(rows=1, key=None, data=(arrays, None))
        batches = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(batches.values())) > 1:
            raise InvalidInput(f"inputs have different batch sizes (axis 0): {batches}")
        lengths = {name: arrays[name].shape[axis] for name, (axis, _) in self.pad.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidInput(f"the padded inputs of one request must have one length; got {lengths}")
        # requests batch together when their items have one shape, padded axes aside
        key = tuple(
            tuple(None if name in self.pad and axis == self.pad[name][0] else n for axis, n in enumerate(a.shape))[1:]
            for name, a in arrays.items()
        )
        length = next(iter(lengths.values())) if lengths else None
        return Prepared(rows=next(iter(batches.values())), key=key, data=(arrays, length))

    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
        run = runners[COMPONENT]
        if len(batch) == 1:  # as sent: nothing to pad, nothing to split
            return [dict(run(batch[0].data[0]))]
        feeds = {t.name: self._merge(t.name, [p.data[0][t.name] for p in batch]) for t in self.inputs}
        out = run(feeds)
        results, start = [], 0
        for p in batch:
            rows, length = slice(start, start + p.rows), p.data[1]
            start += p.rows
            answer = {}
            for name, array in out.items():
                part = array[rows]  # [rows, ...]
                for axis in self.crop.get(name, ()):
                    part = np.take(part, np.arange(length), axis=axis)
                answer[name] = np.ascontiguousarray(part)
            results.append(answer)
        return results

    def _merge(self, name: str, arrays: list[np.ndarray]) -> np.ndarray:
        """One input's arrays of a batch along axis 0, padded to the longest along its pad axis."""
        if name not in self.pad:
            return np.concatenate(arrays, axis=0)
        axis, value = self.pad[name]
        shape = list(arrays[0].shape)
        shape[0] = sum(a.shape[0] for a in arrays)
        shape[axis] = max(a.shape[axis] for a in arrays)
        dtype = arrays[0].dtype
        fill: float | bool | str | bytes = value
        if dtype.kind == "O":  # BYTES
            fill = value.encode() if isinstance(value, str) else b""
        merged = np.full(shape, fill, dtype=dtype)  # [sum rows, ..., longest, ...]
        start = 0
        for a in arrays:
            index = [slice(start, start + a.shape[0])] + [slice(0, n) for n in a.shape[1:]]
            merged[tuple(index)] = a
            start += a.shape[0]
        return merged
