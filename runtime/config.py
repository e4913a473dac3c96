"""The model-repository format: `<repo>/<model>/config.yaml` (a `ModelConfig`, pydantic,
extra="forbid") beside `<repo>/<model>/<version>/`, which holds the files the config names.

Exporters write it, the server reads it; both through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.decode import DecodeLoop
from runtime.files import read_limited
from runtime.stepwise import supports
from runtime.tensors import Signature, TensorSpec
from runtime.variants import EXTERNAL

# tensors: any graph's named tensors in and out, as Triton serves an ONNX model (runtime.pipelines.tensors)
Task = Literal["translate", "sort", "classify", "tensors"]
Device = Literal["cpu", "cuda"]
# request: a batch decodes from first step to last, alone; iteration: requests join and leave one
# running decode batch between decoder steps (runtime.stepwise)
DecodeBatching = Literal["iteration", "request"]
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


class DynamicBatching(_Strict):
    """Triton's `dynamic_batching` block: requests queued for a model are merged into one batch.

    A request that finds the model idle runs at once; requests that arrive while it computes
    wait and run together as the next batch (up to `max_batch_size` items). Names and meanings
    follow Triton's model configuration.
    """

    # wait this long for more requests when the queued ones make no preferred size (0: never wait)
    max_queue_delay_microseconds: int = Field(0, ge=0)
    # batch sizes to form when enough requests are queued (empty: as many items as queued)
    preferred_batch_size: list[int] = []
    # queued requests beyond which new ones are refused with RESOURCE_EXHAUSTED (0: unbounded)
    max_queue_size: int = Field(0, ge=0)
    # a request not started within this time is dropped with DEADLINE_EXCEEDED (0: no limit);
    # a request's `timeout` parameter (microseconds) and its gRPC deadline take precedence
    default_timeout_microseconds: int = Field(0, ge=0)

    @field_validator("preferred_batch_size")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if any(size <= 0 for size in v):
            raise ValueError("preferred batch sizes must be positive")
        return sorted(set(v))


class IterationBatching(_Strict):
    """When the requests waiting to join a running decode batch join it (`decode_batching: iteration`).

    Joining runs the newcomers' encoder, one call for all of them, so newcomers that join together
    cost less than newcomers that join one step after another. As text-generation-inference's
    router does (`max_waiting_tokens`, `waiting_served_ratio`), they wait for a join while the batch
    decodes, at most `max_waiting_steps` decoder steps since the last join; they join at once when
    the batch is empty, or when their rows reach `waiting_served_ratio` times the rows decoding,
    or fill the rows free in `max_batch_size`. 1: join before every step.
    """

    max_waiting_steps: int = Field(4, ge=1, le=1000)
    waiting_served_ratio: float = Field(1.0, gt=0)


class Pad(_Strict):
    """How requests of different lengths along one axis of an input share a batch (task tensors):
    each is padded with `value` up to the longest in its batch, and every output axis that follows
    that length is cropped back to the request's own. `axis` counts the graph's axes (0 = batch)."""

    axis: int = Field(ge=1)
    value: float | bool | str = 0  # a str pads a BYTES input (any other value pads it with b"")


class ModelConfig(_Strict):
    """Everything the server needs to serve one model."""

    name: str
    task: Task
    family: str = ""  # "" for a graph attnserve did not build (task tensors)
    attention: str = EXTERNAL  # the metrics label (runtime.variants)
    components: dict[str, ComponentConfig]
    decode: DecodeLoop | None = None  # encoder + decoder_step models
    vocabs: dict[str, str] = {}  # role -> file in the version folder
    labels: list[str] = []  # classifiers
    # characters (text), values (sort) or words per sentence; unused by task tensors (0 there)
    max_input_length: int = Field(0, ge=0)
    max_output_length: int = Field(16, gt=0)
    value_range: tuple[int, int] | None = None  # sort: values must lie in [low, high)
    max_sentences: int = Field(64, gt=0)  # classify: sentences kept per document
    backends: list[BackendConfig] = Field(min_length=1)  # the first is the default
    device: Device = "cpu"
    # items per batch; 0 (task tensors only, Triton's meaning): the graph has no batch axis, and each
    # request runs as sent
    max_batch_size: int = Field(64, ge=0)
    dynamic_batching: DynamicBatching | None = None  # None: every request runs alone
    # "iteration": one running decode batch per model version and backend, which requests join
    # and leave between decoder steps (encoder + decoder_step models whose loop allows it);
    # "request": each batch decodes alone, from its first step to its last
    decode_batching: DecodeBatching = "request"
    iteration_batching: IterationBatching = IterationBatching()  # when newcomers join (iteration only)
    version_policy: VersionPolicy = VersionPolicy()
    source_checkpoint: str = ""
    int8: bool = False
    pad: dict[str, Pad] = {}  # task tensors: input name -> how its lengths share a batch
    # task tensors: output name -> its axes that follow the padded length (cropped per request);
    # completed from the graph at load when `pad` is set and this is not
    crop: dict[str, list[int]] = {}

    @model_validator(mode="after")
    def _task_fields(self) -> ModelConfig:
        """The attnserve-built tasks need a family, an input length and a batch; `pad` is for tensors."""
        if self.task == "tensors":
            if self.pad and self.max_batch_size == 0:
                raise ValueError(f"pad {sorted(self.pad)} needs batching, but max_batch_size is 0")
            return self
        if not self.family:
            raise ValueError(f"task {self.task} needs a family")
        if self.max_input_length <= 0:
            raise ValueError(f"task {self.task} needs max_input_length > 0")
        if self.max_batch_size <= 0:
            raise ValueError(f"task {self.task} needs max_batch_size > 0")
        if self.pad or self.crop:
            raise ValueError(f"pad and crop are for task tensors, not {self.task}")
        return self

    @model_validator(mode="after")
    def _preferred_within_max(self) -> ModelConfig:
        batching = self.dynamic_batching
        if batching is not None and any(s > self.max_batch_size for s in batching.preferred_batch_size):
            raise ValueError(
                f"dynamic_batching.preferred_batch_size {batching.preferred_batch_size} exceeds "
                f"max_batch_size {self.max_batch_size}"
            )
        return self

    @model_validator(mode="after")
    def _iteration_needs_a_stepwise_loop(self) -> ModelConfig:
        """Refuse `decode_batching: iteration` for a model that cannot share a running decode batch."""
        if self.decode_batching != "iteration":
            return self
        missing = [c for c in ("encoder", "decoder_step") if c not in self.components]
        if self.decode is None or missing:
            raise ValueError(
                f"decode_batching 'iteration' needs an encoder + decoder_step model with a decode loop; "
                f"model '{self.name}' has components {sorted(self.components)}"
                f"{'' if self.decode is not None else ' and no decode loop'}: use 'request'"
            )
        if not supports(self.decode):
            raise ValueError(
                f"decode_batching 'iteration' is not supported by model '{self.name}': its decode loop "
                f"cannot share a batch across requests (decoder inputs that grow with each step: "
                f"{sorted(self.decode.empty)}); use 'request'"
            )
        return self

    def component_list(self) -> list[Component]:
        """The components in config order, as backends load them."""
        return [
            Component(name, c.file, Signature(inputs=c.inputs, outputs=c.outputs))
            for name, c in self.components.items()
        ]

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read and validate a config.yaml (a regular file of at most runtime.files.MAX_TEXT_BYTES)."""
        return cls.model_validate(read_raw(path))

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def read_raw(path: Path) -> dict[str, Any]:
    """A config.yaml's mapping, not yet validated (a partial one is completed first: task tensors)."""
    data = yaml.safe_load(read_limited(path, what="model config").decode("utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} must hold a mapping of settings, not a {type(data).__name__}")
    return data
