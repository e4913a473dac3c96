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
from runtime.pipelines.base import Pipeline, Runners

ATOL = 1e-4


class ValidationError(RuntimeError):
    """An exported graph is not a faithful, dynamic copy of the PyTorch model."""


@dataclass
class Report:
    """Parity figures and failures of one model's export."""

    parity: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def raise_if_failed(self, model: str) -> None:
        if self.failures:
            lines = "\n  - ".join(self.failures)
            raise ValidationError(f"export of {model} failed validation:\n  - {lines}")


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with one intra-op thread (see onnx-export.md, Runtime)."""
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
