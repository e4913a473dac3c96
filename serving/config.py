"""Per-model configuration (`<repo>/<model>/config.yaml`), validated with pydantic, extra="forbid"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.pipelines.decode import DecodeLoop

Task = Literal["translate", "sort", "classify"]
Device = Literal["cpu", "cuda"]
CONFIG_FILE = "config.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorConfig(_Strict):
    """A graph input or output as the server reports it: -1 marks a variable axis."""

    name: str
    dtype: Literal["float32", "int64", "bool"]
    shape: list[int]
    axes: list[str | int]


class ComponentConfig(_Strict):
    """One component graph: its ONNX file (relative to the version folder) and signature."""

    file: str
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]


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

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.model_validate(yaml.safe_load(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
