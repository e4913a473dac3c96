"""Export specs: per family, the component graphs and their I/O as {name: {axis: symbol}}.

One spec feeds the exporter (dynamic shapes), the validator (which axes must stay symbolic,
which shapes to check) and the model repository (tensor metadata the server reports).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

Dims = dict[str, int]  # symbol -> size, e.g. {"batch": 3, "src_len": 17}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: dtype and axes (a str is a symbolic axis, an int a fixed size)."""

    name: str
    dtype: str  # "int64" | "bool" | "float32"
    axes: tuple[str | int, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.axes) if isinstance(a, str)}

    def shape(self, dims: Dims) -> tuple[int, ...]:
        return tuple(dims[a] if isinstance(a, str) else a for a in self.axes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": [a if isinstance(a, int) else -1 for a in self.axes],
            "axes": list(self.axes),
        }


@dataclass(frozen=True)
class ComponentSpec:
    """A named graph with a fixed signature."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Symbols whose size is an expression of others (past_len + 1): checked symbolic, not by name.
    derived: dict[str, str] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def symbols(self) -> set[str]:
        return {a for t in (*self.inputs, *self.outputs) for a in t.axes if isinstance(a, str)}


@dataclass
class Component:
    """A component ready to export: its spec, an export-only module and an input maker."""

    spec: ComponentSpec
    module: nn.Module
    make_inputs: Callable[[Dims, torch.Generator], dict[str, Tensor]]


def lengths_mask(batch: int, length: int, gen: torch.Generator, min_len: int = 1) -> Tensor:
    """A right-padded bool mask [batch, length]: row 0 full, others random lengths >= min_len."""
    lengths = torch.randint(min(min_len, length), length + 1, (batch,), generator=gen)
    lengths[0] = length
    return torch.arange(length)[None, :] < lengths[:, None]  # [B, L]


class ExportSpec(abc.ABC):
    """How to cut one model family into exportable components."""

    family: ClassVar[str]
    #: sizes of the example the exporter traces with (>= 2 everywhere, see onnx-export.md G6)
    example: ClassVar[Dims]
    #: sizes the validator checks; must include a length of 1 and lengths above the example's
    check_shapes: ClassVar[list[Dims]]

    def __init__(self, model: nn.Module, config: dict[str, Any]) -> None:
        self.model = model.eval()
        self.config = config

    @abc.abstractmethod
    def components(self) -> list[Component]:
        """The components in the order a pipeline calls them."""

    @abc.abstractmethod
    def end_to_end(self, family: Any, examples: Sequence[Any], runners: dict[str, Any]) -> dict[str, Any]:
        """Run held-out `examples` through `runners` (component name -> dict-to-dict callable)
        as the server would; return {"n", "agreement" (with PyTorch), "metric", "value"}."""


_SPECS: dict[str, type[ExportSpec]] = {}


def register_spec(cls: type[ExportSpec]) -> type[ExportSpec]:
    """Class decorator: the ExportSpec for `cls.family`."""
    _SPECS[cls.family] = cls
    return cls


def get_spec(family: str) -> type[ExportSpec]:
    from exporters import families  # noqa: F401  (registers the built-in specs)

    try:
        return _SPECS[family]
    except KeyError:
        raise ValueError(f"no export spec for family {family!r}; known: {sorted(_SPECS)}") from None


def registered_families() -> list[str]:
    from exporters import families  # noqa: F401

    return sorted(_SPECS)
