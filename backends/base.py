"""The backend plugin contract (entry-point group `attnserve.backends`).

A backend runs one component graph of one model version on one device. The server finds
backends by name through Python entry points, so a third-party package registers its own
exactly as the built-ins do:

    [project.entry-points."attnserve.backends"]
    mybackend = "my_pkg.module:MyBackend"
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

Device = Literal["cpu", "cuda"]
ENTRY_POINT_GROUP = "attnserve.backends"


class BackendOptions(BaseModel):
    """Per-backend options from `config.yaml`; subclasses add fields, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, numpy dtype name and shape (a str is a symbolic axis)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


class Backend(abc.ABC):
    """One loaded component on one device. An instance is ready to serve when `load` returns."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    @classmethod
    @abc.abstractmethod
    def load(cls, artifact_dir: Path, component: str, device: Device, options: BackendOptions) -> Self:
        """Load `component` from `artifact_dir`; raise serving.errors.ModelLoadError on failure."""

    @property
    @abc.abstractmethod
    def signature(self) -> Signature:
        """Inputs and outputs of the loaded component."""

    @abc.abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one already-batched call (axis 0 = batch). Blocking; called from a worker thread."""

    def describe(self) -> dict[str, Any]:
        """Facts to report in model metadata (e.g. the execution provider actually used)."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release sessions and device memory. Default: nothing to release."""
