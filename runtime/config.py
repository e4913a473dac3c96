"""The model-repository format: `<repo>/<model>/config.yaml` (a `ModelConfig`, pydantic,
extra="forbid") beside `<repo>/<model>/<version>/`, which holds the files the config names.

Exporters write it, the server reads it; both through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.decode import DecodeLoop
from runtime.files import read_limited
from runtime.tensors import Signature, TensorSpec

Task = Literal["translate", "sort", "classify"]
Device = Literal["cpu", "cuda"]
CONFIG_FILE = "config.yaml"
REPORT_FILE = "export_report.json"  # in a version folder: versions, parity, end-to-end figures
TORCH_DIR = "torch"  # in a version folder: the PyTorch artifact (safetensors, config.json, vocabularies)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Strict):
    """One component graph: its ONNX file (relative to the version folder) and signature.

    Backends load the file named here, and the server checks each backend's signature
    against `inputs` and `outputs` when it loads the model.
    """

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Component:
    """What a backend loads: a component's name, its file in the artifact folder, and the
    signature the config declares (the server checks the backend's against it)."""

    name: str
    file: str
    signature: Signature


class BackendConfig(_Strict):
    """A backend the model may run on; `options` are validated by the backend itself."""

    name: str
    artifact: str = ""  # folder inside the version folder, "" = the version folder itself
    options: dict[str, Any] = {}


class VersionPolicy(_Strict):
    """Triton's policies: the latest N versions, or a specific list."""

    latest: int | None = Field(1, ge=1)
    specific: list[int] | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> VersionPolicy:
        if self.specific is not None:
            self.latest = None
        return self


class ModelConfig(_Strict):
    """Everything the server needs to serve one model."""

    name: str
    task: Task
    family: str
    attention: str
    components: dict[str, ComponentConfig]
    decode: DecodeLoop | None = None  # encoder + decoder_step models
    vocabs: dict[str, str] = {}  # role -> file in the version folder
    labels: list[str] = []  # classifiers
    max_input_length: int = Field(gt=0)  # characters (text), values (sort) or words per sentence
    max_output_length: int = Field(16, gt=0)
    value_range: tuple[int, int] | None = None  # sort: values must lie in [low, high)
    max_sentences: int = Field(64, gt=0)  # classify: sentences kept per document
    backends: list[BackendConfig] = Field(min_length=1)  # the first is the default
    device: Device = "cpu"
    max_batch_size: int = Field(64, gt=0)
    version_policy: VersionPolicy = VersionPolicy()
    source_checkpoint: str = ""
    int8: bool = False

    def component_list(self) -> list[Component]:
        """The components in config order, as backends load them."""
        return [
            Component(name, c.file, Signature(inputs=c.inputs, outputs=c.outputs))
            for name, c in self.components.items()
        ]

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read and validate a config.yaml (a regular file of at most runtime.files.MAX_TEXT_BYTES)."""
        return cls.model_validate(yaml.safe_load(read_limited(path, what="model config").decode("utf-8")))

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
