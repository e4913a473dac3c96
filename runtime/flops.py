"""FLOPs per component call as polynomials in the graph's symbolic axes (`<version>/flops.json`).

The exporter counts the operators of each ONNX graph at a few concrete sizes and fits one
polynomial per component in its axis symbols (batch, src_len, past_len, ...), with integer
coefficients (exporters.flops). The server evaluates it on every component call from the shapes
of the call's feeds: a few integer multiplications, no graph walk.

Per row: a call's FLOPs are its rows times the polynomial at batch 1. Work that does not grow with
the batch (the Transformer's positional table, 96·src_len of its encoder's 168,000·src_len; a few
scalar operations) is so counted once per row, which makes a request's FLOPs independent of its
batch-mates: N equal requests count N times one, however they were batched, and a batch's FLOPs
split over its rows exactly, in integers.

Convention (what a FLOP is here): a multiply-add is 2 FLOPs (MatMul, Gemm and the GRU's matrix
products: 2·M·N·K); every other arithmetic operator costs 1 FLOP per output element (Softmax 5,
LayerNormalization 8, a reduction 1 per input element); data movement (Reshape, Gather, Concat,
Cast, Where, ...) costs nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.decode import Runner
from runtime.errors import InvalidModelConfig
from runtime.files import read_limited, regular_file
from runtime.tensors import TensorSpec

FLOPS_FILE = "flops.json"  # in a version folder, beside the component graphs
PETAFLOP_S_DAY = 1e15 * 86400  # FLOPs in one petaflop/s-day (about 8.64e19)
BATCH = "batch"  # the batch axis symbol of every component input


class Term(BaseModel):
    """`coef` times the product of each symbol to its power (no powers: a constant)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coef: int
    powers: dict[str, int] = {}

    def at(self, dims: Mapping[str, int]) -> int:
        value = self.coef
        for sym, p in self.powers.items():
            value *= dims[sym] ** p
        return value

    def text(self) -> str:
        factors = [s if p == 1 else f"{s}^{p}" for s, p in sorted(self.powers.items())]
        return "*".join([str(self.coef), *factors])


class Polynomial(BaseModel):
    """A sum of terms over the symbols `axes`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    axes: tuple[str, ...]
    terms: tuple[Term, ...]

    @model_validator(mode="after")
    def _known_symbols(self) -> Polynomial:
        for term in self.terms:
            unknown = set(term.powers) - set(self.axes)
            if unknown or any(p < 0 for p in term.powers.values()):
                raise ValueError(f"term {term.text()} has symbols {sorted(unknown)} not in {list(self.axes)}")
            if term.powers.get(BATCH, 0) > 1:
                raise ValueError(f"term {term.text()}: FLOPs must grow linearly with the batch")
        return self

    def at(self, dims: Mapping[str, int]) -> int:
        """Its value at the sizes `dims` (every symbol of `axes` present), an exact integer."""
        return sum(t.at(dims) for t in self.terms)

    def per_row(self, dims: Mapping[str, int]) -> int:
        """FLOPs of one row at the other sizes of `dims` (its value at batch 1; see the module)."""
        return self.at({**dims, BATCH: 1})

    def rows_times(self, dims: Mapping[str, int]) -> int:
        """The accounted FLOPs of a call at `dims`: its rows (`dims[batch]`, 1 without) times one row's."""
        return dims.get(BATCH, 1) * self.per_row(dims)

    def text(self) -> str:
        return " + ".join(t.text() for t in self.terms) or "0"


class ComponentFlops(BaseModel):
    """FLOPs of one call of one component: the total, and the share of each operator type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: Polynomial
    by_op: dict[str, Polynomial] = {}


class RequestFigures(BaseModel):
    """FLOPs of held-out requests, each served alone (encoder + every decoder step it ran)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(ge=1)
    mean: float
    min: int
    max: int


class FlopsFile(BaseModel):
    """`flops.json`: the model's parameters and each component's FLOPs per call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    convention: str = "2 FLOPs per multiply-add; 1 per element of other arithmetic (runtime.flops)"
    parameters: int = Field(ge=0)
    components: dict[str, ComponentFlops]
    per_request: RequestFigures | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=1) + "\n")

    @classmethod
    def read(cls, version_dir: Path) -> FlopsFile | None:
        """The version's flops.json, None when it has none; InvalidModelConfig when it is malformed."""
        if not (Path(version_dir) / FLOPS_FILE).exists():
            return None
        data = read_limited(regular_file(version_dir, FLOPS_FILE, "FLOPs file"), what="FLOPs file")
        try:
            return cls.model_validate_json(data)
        except ValueError as exc:
            raise InvalidModelConfig(f"{FLOPS_FILE}: {exc}") from None

    def check(self, components: Mapping[str, Sequence[TensorSpec]]) -> None:
        """InvalidModelConfig unless it covers exactly these components (name -> input specs) and
        each formula uses only symbols their inputs have."""
        if set(self.components) != set(components):
            raise InvalidModelConfig(
                f"{FLOPS_FILE} counts components {sorted(self.components)}, the config has {sorted(components)}"
            )
        for name, inputs in components.items():
            have = {a for t in inputs for a in t.axes if isinstance(a, str)}
            missing = set(self.components[name].total.axes) - have
            if missing:
                raise InvalidModelConfig(
                    f"{FLOPS_FILE}: component '{name}' is counted over {sorted(missing)}, axes its inputs lack"
                )


def counters(flops: FlopsFile, inputs: Mapping[str, Iterable[TensorSpec]]) -> dict[str, CallCounter]:
    """A CallCounter per component (name -> its input specs)."""
    return {name: CallCounter(flops.components[name], specs) for name, specs in inputs.items()}


def counted(runners: Mapping[str, Runner], counts: Mapping[str, CallCounter], sink: list[int]) -> dict[str, Runner]:
    """The runners, each call's accounted FLOPs appended to `sink`."""

    def wrap(runner: Runner, counter: CallCounter) -> Runner:
        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            sink.append(counter(feeds))
            return runner(feeds)

        return run

    return {name: wrap(r, counts[name]) for name, r in runners.items()}


class CallCounter:
    """Accounted FLOPs of a component call from its feeds (rows times one row's; the axis sizes are
    read off the feed shapes)."""

    def __init__(self, flops: ComponentFlops, inputs: Iterable[TensorSpec]) -> None:
        self.polynomial = flops.total
        where: dict[str, tuple[str, int]] = {}
        for t in inputs:
            for axis, sym in t.dynamic_axes().items():
                where.setdefault(sym, (t.name, axis))
        self._where = [(sym, *where[sym]) for sym in flops.total.axes]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> int:
        dims = {sym: feeds[name].shape[axis] for sym, name, axis in self._where}
        return self.polynomial.rows_times(dims)


def split(total: int, rows: Sequence[int]) -> list[int]:
    """`total` shared in proportion to `rows`, in integers that sum to it exactly (the largest
    remainders go first, earliest first on ties); equal rows of a divisible total get equal shares."""
    n = sum(rows)
    if n == 0:
        return [0] * len(rows)
    shares = [total * r // n for r in rows]
    left = total - sum(shares)
    order = sorted(range(len(rows)), key=lambda i: (-(total * rows[i] % n), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def petaflop_s_days(flops: float) -> float:
    return flops / PETAFLOP_S_DAY


def fit(axes: Sequence[str], samples: Sequence[tuple[Mapping[str, int], int]], degree: int = 2) -> Polynomial:
    """The polynomial with integer coefficients, each symbol of `axes` to a power up to `degree`,
    through `samples` [(sizes, value)]; ValueError when none fits them all exactly.

    Needs (degree + 1) distinct sizes per symbol on a grid (see `grid`); extra samples check the fit.
    """
    powers = [dict(zip(axes, p, strict=True)) for p in _exponents(len(axes), degree)]
    a = np.array([[math.prod(d[s] ** p[s] for s in axes) for p in powers] for d, _ in samples], dtype=np.float64)
    b = np.array([v for _, v in samples], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    rounded = [int(np.rint(c)) for c in coef]
    terms = tuple(
        Term(coef=c, powers={s: e for s, e in p.items() if e}) for c, p in zip(rounded, powers, strict=True) if c
    )
    poly = Polynomial(axes=tuple(axes), terms=terms)
    wrong = [(dict(d), v, poly.at(d)) for d, v in samples if poly.at(d) != v]
    if wrong:
        raise ValueError(f"no polynomial of degree <= {degree} per axis fits the counts; e.g. {wrong[0]}")
    return poly


def grid(axes: Sequence[str], values: Mapping[str, Sequence[int]]) -> list[dict[str, int]]:
    """Every combination of the sizes `values[axis]`."""
    points: list[dict[str, int]] = [{}]
    for axis in axes:
        points = [{**p, axis: v} for p in points for v in values[axis]]
    return points


def _exponents(n: int, degree: int) -> list[tuple[int, ...]]:
    if n == 0:
        return [()]
    return [(e, *rest) for e in range(degree + 1) for rest in _exponents(n - 1, degree)]
