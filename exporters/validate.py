"""The verification gate every export passes: symbolic axes, ORT-vs-PyTorch parity, agreement.

All failures are collected before raising one `ValidationError` that names the component,
output and shape of each (Optimum's habit), so one run shows everything that is off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.components.spec import Component, Dims
from runtime.decode import DecodeLoop
from runtime.pipelines.base import Pipeline, Runners

ATOL = 1e-4


class ValidationError(RuntimeError):
    """An exported graph is not a faithful, dynamic copy of the PyTorch model."""


@dataclass
class Report:
    """Parity figures and failures of one model's export."""

    parity: list[dict[str, Any]] = field(default_factory=list)
    rows_alone: list[dict[str, Any]] = field(default_factory=list)  # check_rows_alone's figures
    failures: list[str] = field(default_factory=list)

    def raise_if_failed(self, model: str) -> None:
        if self.failures:
            lines = "\n  - ".join(self.failures)
            raise ValidationError(f"export of {model} failed validation:\n  - {lines}")


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with one intra-op thread (docs/export-pitfalls.md, Runtime)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_symbolic(component: Component, path: Path) -> list[str]:
    """Every declared symbolic axis is a dim_param in the graph; fixed axes have their size."""
    graph = onnx.load(str(path)).graph
    declared = {t.name: t for t in (*component.spec.inputs, *component.spec.outputs)}
    found = {v.name: v for v in (*graph.input, *graph.output)}
    failures = []
    for name, spec in declared.items():
        if name not in found:
            failures.append(f"{component.spec.name}: {name} is missing from the graph")
            continue
        dims = found[name].type.tensor_type.shape.dim
        if len(dims) != len(spec.axes):
            failures.append(f"{component.spec.name}: {name} has rank {len(dims)}, expected {len(spec.axes)}")
            continue
        for axis, (want, dim) in enumerate(zip(spec.axes, dims, strict=True)):
            if isinstance(want, str) and not dim.dim_param:
                failures.append(
                    f"{component.spec.name}: {name} axis {axis} ({want}) is frozen at {dim.dim_value}; "
                    "it must stay symbolic"
                )
            elif isinstance(want, int) and dim.dim_value != want:
                got = dim.dim_param or dim.dim_value
                failures.append(f"{component.spec.name}: {name} axis {axis} is {got}, expected {want}")
    return failures


def check_parity(
    component: Component, path: Path, shapes: Sequence[Dims], atol: float = ATOL, seed: int = 1
) -> tuple[list[dict[str, Any]], list[str]]:
    """ORT vs PyTorch on padded random inputs at each shape: max abs diff per output."""
    sess = session(path)
    rows, failures = [], []
    for dims in shapes:
        gen = torch.Generator().manual_seed(seed)
        feeds = component.make_inputs(dims, gen)
        with torch.no_grad():
            expected = component.module(*(feeds[n] for n in component.spec.input_names))
        expected = expected if isinstance(expected, tuple) else (expected,)
        try:
            got = sess.run(component.spec.output_names, {k: v.numpy() for k, v in feeds.items()})
        except Exception as exc:  # ORT raises its own exception types per failure kind
            failures.append(f"{component.spec.name} at {dims}: ONNX Runtime failed: {exc}")
            continue
        for name, want, have in zip(component.spec.output_names, expected, got, strict=True):
            want = want.numpy()
            if want.shape != have.shape:
                failures.append(f"{component.spec.name}/{name} at {dims}: shape {have.shape} != {want.shape}")
                continue
            diff = float(np.abs(want - have).max()) if want.size else 0.0
            rows.append(
                {
                    "component": component.spec.name,
                    "output": name,
                    "dims": dims,
                    "max_abs_diff": diff,
                }
            )
            if not diff <= atol:  # also catches NaN
                failures.append(f"{component.spec.name}/{name} at {dims}: max abs diff {diff:.3g} > {atol}")
    return rows, failures


def check_rows_alone(
    component: Component, path: Path, loop: DecodeLoop, shapes: Sequence[Dims], atol: float = ATOL, seed: int = 2
) -> tuple[list[dict[str, Any]], list[str]]:
    """A decoder_step with per-row steps (`loop.cache_mask_input`): in ONNX Runtime, each row of a
    batch whose rows sit at different steps (caches left-padded with noise) gives the outputs it
    gives alone with only its real cached steps. Max abs diff per output over the rows."""
    if loop.cache_mask_input is None:
        return [], []
    spec = component.spec
    inputs = {t.name: t for t in spec.inputs}
    cache_symbol = inputs[loop.cache_mask_input].axes[1]
    cache_axis = {n: t.axes.index(cache_symbol) for n, t in inputs.items() if cache_symbol in t.axes}
    batch_axis = {n: loop.batch_axes.get(n, 0) for n in inputs}
    out_batch = {src: batch_axis.get(dst, 0) for src, dst in loop.recurrent.items()}
    out_cache = {src: cache_axis[dst] for src, dst in loop.recurrent.items() if dst in cache_axis}
    sess = session(path)
    rows, failures = [], []
    for dims in shapes:
        if dims.get("batch", 1) < 2:
            continue
        feeds = {k: v.numpy() for k, v in component.make_inputs(dims, torch.Generator().manual_seed(seed)).items()}
        try:
            together = dict(zip(spec.output_names, sess.run(spec.output_names, feeds), strict=True))
            diffs = {name: 0.0 for name in spec.output_names}
            for row in range(dims["batch"]):
                real = feeds[loop.cache_mask_input][row]  # [P]: this row's real cached steps
                alone_feeds = {}
                for name, value in feeds.items():
                    value = np.take(value, [row], axis=batch_axis[name])
                    if name in cache_axis:
                        value = np.compress(real, value, axis=cache_axis[name])
                    alone_feeds[name] = value
                alone = sess.run(spec.output_names, alone_feeds)
                keep = np.append(real, True)  # its real steps and the new one
                for name, want in zip(spec.output_names, alone, strict=True):
                    have = np.take(together[name], [row], axis=out_batch.get(name, 0))
                    if name in out_cache:
                        have = np.compress(keep, have, axis=out_cache[name])
                    if have.shape != want.shape:
                        diffs[name] = float("inf")
                    elif want.size:
                        diffs[name] = max(diffs[name], float(np.abs(have - want).max()))
        except Exception as exc:  # ORT raises its own exception types per failure kind
            failures.append(f"{spec.name} rows alone at {dims}: ONNX Runtime failed: {exc}")
            continue
        for name, diff in diffs.items():
            rows.append({"component": spec.name, "output": name, "dims": dims, "rows_alone_max_abs_diff": diff})
            if not diff <= atol:
                failures.append(
                    f"{spec.name}/{name} at {dims}: rows at different steps differ from the same rows alone "
                    f"by {diff:.3g} > {atol}"
                )
    return rows, failures


def ort_runner(
    sess: ort.InferenceSession,
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Wrap a session as a dict -> dict runner (inputs the graph does not take are dropped)."""
    names = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, sess.run(outputs, {n: feeds[n] for n in names}), strict=True))

    return run


E2E_BATCH = 100


@dataclass
class EndToEnd:
    """Held-out examples through the server's own task code: agreement with PyTorch and the metric."""

    n: int
    agreement: float  # share of predictions equal to the PyTorch model's own
    metric: str
    value: float  # the task metric of the served predictions
    mismatches: list[dict[str, str]]  # the first few disagreements (input, served, torch)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def end_to_end(family: Any, model: Any, examples: Sequence[Any], pipeline: Pipeline, runners: Runners) -> EndToEnd:
    """Run held-out `examples` through `pipeline` (runtime.pipelines: what the server runs) over
    `runners`, sent as a client sends them; compare with `family.predict` of the PyTorch `model`."""
    sources = [family.source(ex) for ex in examples]
    got: list[Any] = [None] * len(sources)
    for rows, inputs in pipeline.requests(sources, min(E2E_BATCH, pipeline.config.max_batch_size)):
        for i, answer in zip(rows, pipeline.answers(pipeline.run(inputs, {}, runners)), strict=True):
            got[i] = answer
    expected: list[Any] = []
    for start in range(0, len(sources), E2E_BATCH):
        expected += family.predict(model, sources[start : start + E2E_BATCH])
    n = len(examples)
    mismatches = [
        {"input": str(s), "served": str(g), "torch": str(e)}
        for s, g, e in zip(sources, got, expected, strict=True)
        if g != e
    ]
    hits = sum(g == family.target(ex) for g, ex in zip(got, examples, strict=True))
    return EndToEnd(
        n=n,
        agreement=(n - len(mismatches)) / n if n else 1.0,
        metric=family.metric,
        value=hits / n if n else 0.0,
        mismatches=mismatches[:5],
    )
