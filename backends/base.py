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
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from runtime.config import Component
from runtime.files import regular_file
from runtime.registry import BACKEND_GROUP
from runtime.tensors import Signature

Device = Literal["cpu", "cuda"]
ENTRY_POINT_GROUP = BACKEND_GROUP  # "attnserve.backends"


class BackendOptions(BaseModel):
    """Per-backend options from `config.yaml`; subclasses add fields, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Backend(abc.ABC):
    """One loaded component on one device. An instance is ready to serve when `load` returns."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    @classmethod
    def coerce_options(cls, options: BackendOptions | Mapping[str, Any] | None) -> Any:
        """`options` as this backend's `Options`: None gives the defaults; another BackendOptions
        passes the fields it set, a mapping its keys (validated: unknown keys are errors)."""
        if isinstance(options, cls.Options):
            return options
        if options is None:
            return cls.Options()
        data = options.model_dump(exclude_unset=True) if isinstance(options, BackendOptions) else dict(options)
        return cls.Options.model_validate(data)

    @classmethod
    @abc.abstractmethod
    def load(cls, artifact_dir: Path, component: Component, device: Device, options: BackendOptions) -> Self:
        """Load `component` (its name, the file `config.yaml` names, its declared signature) from
        `artifact_dir`; raise runtime.errors.ModelLoadError on failure. The server checks the
        loaded `signature` against the declared one."""

    @property
    @abc.abstractmethod
    def signature(self) -> Signature:
        """Inputs and outputs of the loaded component (a str axis is symbolic)."""

    @abc.abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one already-batched call (axis 0 = batch). Blocking; called from a worker thread."""

    def describe(self) -> dict[str, Any]:
        """Facts to report in model metadata (e.g. the execution provider actually used)."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release sessions and device memory. Default: nothing to release."""


def artifact_file(artifact_dir: Path, name: str) -> Path:
    """`name` inside `artifact_dir`, symlinks resolved; ModelLoadError when it is missing, not a
    regular file, or resolves outside the folder (an absolute path, `..`, a link pointing out)."""
    return regular_file(artifact_dir, name, "artifact file")
