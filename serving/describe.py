"""What the transports say about the server and its models: metadata and model readiness, decided
once here so gRPC and HTTP answer alike."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import ModelNotFound
from runtime.tensors import TensorSpec
from serving.repository import LoadedVersion, ModelRepository, State, check_name, version_number

SERVER_NAME = "attnserve"
# the protocol extensions both transports offer; HTTP adds binary_tensor_data
EXTENSIONS = ("model_repository", "model_configuration", "statistics", "attention_maps")
# Triton's platform names of our backends
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "torch": "pytorch_safetensors"}


@dataclass(frozen=True)
class ModelMetadata:
    """A model version's name, the versions it serves, its platform and its request tensors."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str]  # compute facts (`compute_facts`); KServe V2 metadata has no such field


def compute_facts(model: LoadedVersion) -> dict[str, str]:
    """Parameters and FLOPs of a model version, from its flops.json (runtime.flops), as strings:
    `parameters`, `flops.<component>` (FLOPs of one call, a polynomial in its axes) and
    `flops_per_request` (mean over held-out requests served alone); empty without flops.json."""
    flops = model.flops
    if flops is None:
        return {}
    facts = {"parameters": str(flops.parameters)}
    facts |= {f"flops.{name}": c.total.text() for name, c in flops.components.items()}
    if flops.per_request is not None:
        facts["flops_per_request"] = f"{flops.per_request.mean:.0f}"
    return facts


def model_metadata(repository: ModelRepository, name: str, version: str = "") -> ModelMetadata:
    """Metadata of (name, version); NOT_FOUND / UNAVAILABLE as `ModelRepository.get` raises them."""
    model = repository.get(name, version)
    entry = repository.entry(name)
    versions = sorted(entry.versions) if entry else [model.version]
    return ModelMetadata(
        name=model.config.name,
        versions=tuple(str(v) for v in versions),
        platform=PLATFORMS.get(model.default_backend, model.default_backend),
        inputs=tuple(model.pipeline.inputs),
        outputs=tuple(model.pipeline.outputs),
        parameters=compute_facts(model),
    )


def model_ready(repository: ModelRepository, name: str, version: str = "", draining: bool = False) -> bool:
    """Whether (name, version) serves requests now: never while the server drains; a model of the
    repository that is not loaded is not ready; a name the repository does not hold is NOT_FOUND."""
    check_name(name)
    entry = repository.entry(name)
    if entry is None:
        if name in repository.available():
            return False
        raise ModelNotFound(f"unknown model '{name}'")
    if draining:
        return False
    if not version:
        return entry.state is State.READY and bool(entry.versions)
    return version_number(version) in entry.versions
