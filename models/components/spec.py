"""Export specs: per family, the component graphs and their I/O as {name: {axis: symbol}}.

One spec feeds the exporter (dynamic shapes), the validator (which axes must stay symbolic,
which shapes to check) and the model repository (tensor metadata the server reports).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from runtime.config import Task
from runtime.decode import DecodeLoop
from runtime.registry import EXPORT_SPEC_GROUP, Registry, subclass_of
from runtime.tensors import Signature, TensorSpec

Dims = dict[str, int]  # symbol -> size, e.g. {"batch": 3, "src_len": 17}


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

    @property
    def signature(self) -> Signature:
        return Signature(inputs=self.inputs, outputs=self.outputs)

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
    """How to cut one model family into exportable components, and the facts the server needs
    to run them (task, decode loop, input limits, labels): declared once, here, and written into
    `config.yaml` by the exporter."""

    family: ClassVar[str]
    task: ClassVar[Task | None] = None  # the runtime pipeline that serves the family; None: export only
    decode: DecodeLoop | None = None  # encoder + decoder_step families
    #: sizes of the example the exporter traces with (>= 2 everywhere: docs/export-pitfalls.md, G6)
    example: ClassVar[Dims]
    #: sizes the validator checks; must include a length of 1 and lengths above the example's
    check_shapes: ClassVar[list[Dims]]

    def __init__(self, model: nn.Module, config: dict[str, Any]) -> None:
        self.model = model.eval()
        self.config = config

    @abc.abstractmethod
    def components(self) -> list[Component]:
        """The components in the order a pipeline calls them."""

    def max_input_length(self) -> int:
        """Longest input the model accepts: characters, values, or words per sentence."""
        raise TypeError(f"{type(self).__name__} declares no input limit: it exports, but attnserve cannot serve it")

    def serving_facts(self, family: Any) -> dict[str, Any]:
        """The `config.yaml` fields of the family: task, decode loop and limits (`family` is the
        checkpoint's models.families.Family, for labels)."""
        if self.task is None:
            raise TypeError(f"{type(self).__name__} declares no task: it exports, but attnserve cannot serve it")
        facts = {"task": self.task, "decode": self.decode, "max_input_length": self.max_input_length()}
        longest = getattr(family, "max_output_length", None)  # where the task decodes longer than the default
        return facts if longest is None else {**facts, "max_output_length": int(longest)}


def export_specs() -> Registry[type[ExportSpec]]:
    """The export-spec registry: the `attnserve.export_specs` entry-point group, keyed by family."""
    return Registry(EXPORT_SPEC_GROUP, "export spec", subclass_of(ExportSpec))


def get_spec(family: str, reference: str | None = None, package: str | None = None) -> type[ExportSpec]:
    """The ExportSpec registered for `family`, or the one `reference` ("package.module:Spec", what
    `attnserve export --spec` was given) names; `package`, where known, is named if it is missing."""
    if reference is None:
        return export_specs().load(family, package)
    spec = export_specs().load_reference(reference, package)
    if spec.family != family:
        raise ValueError(f"export spec {reference} is for the family {spec.family!r}, not {family!r}")
    return spec


def registered_families() -> list[str]:
    """The families with a registered export spec."""
    return export_specs().names()
