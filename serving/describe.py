"""What the transports say about the server and its models: metadata and model readiness, decided
once here so gRPC and HTTP answer alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from runtime.errors import ModelNotFound, shown
from runtime.tensors import TensorSpec
from serving.repository import LoadedVersion, ModelRepository, State, check_name, version_number
from serving.stats import Duration, StatsRegistry

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
        raise ModelNotFound(f"unknown model '{shown(name)}'")
    if draining:
        return False
    if not version:
        return entry.state is State.READY and bool(entry.versions)
    return version_number(version) in entry.versions


# --- Triton's ModelConfig, ModelStatistics and RepositoryIndex, as JSON-shaped dicts -------
# The field names are those of Triton's protobuf messages: gRPC parses these dicts into its
# messages, REST sends them as JSON, so both transports answer from one description.

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def model_config(model: LoadedVersion) -> dict[str, Any]:
    """Triton's ModelConfig of a loaded model version, fields at their default left out (as
    protobuf's JSON form leaves them); backend facts (e.g. the ORT provider) in `parameters`."""
    cfg = model.config
    doc: dict[str, Any] = {
        "name": cfg.name,
        "platform": PLATFORMS.get(model.default_backend, model.default_backend),
        "backend": model.default_backend,
        "max_batch_size": cfg.max_batch_size,
    }
    if cfg.dynamic_batching is not None:
        b = cfg.dynamic_batching
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(b.preferred_batch_size),
            "max_queue_delay_microseconds": b.max_queue_delay_microseconds,
            "default_queue_policy": {
                "max_queue_size": b.max_queue_size,
                "default_timeout_microseconds": b.default_timeout_microseconds,
                "allow_timeout_override": True,  # the `timeout` request parameter
            },
        }
    if cfg.version_policy.specific is not None:
        doc["version_policy"] = {"specific": {"versions": list(cfg.version_policy.specific)}}
    else:
        doc["version_policy"] = {"latest": {"num_versions": cfg.version_policy.latest or 1}}
    pipeline = model.pipeline
    for key, specs in (("input", pipeline.inputs), ("output", pipeline.outputs)):
        doc[key] = [
            {"name": t.name, "data_type": _config_type(t.datatype), "dims": pipeline.config_dims(t)} for t in specs
        ]
    facts = {
        "task": cfg.task,
        "family": cfg.family,
        "attention": cfg.attention,
        "device": cfg.device,
        "backends": ",".join(b.name for b in cfg.backends),
        "int8": str(cfg.int8).lower(),
        "decode_batching": cfg.decode_batching,
        **compute_facts(model),
    }
    for backend, described in model.describe().items():
        for key, value in described.items():
            if key != "backend":
                facts[f"{backend}.{key}"] = ",".join(value) if isinstance(value, list) else str(value)
    doc["parameters"] = {key: {"string_value": str(value)} for key, value in facts.items()}
    kind = "KIND_GPU" if cfg.device == "cuda" else "KIND_CPU"
    doc["instance_group"] = [{"name": cfg.name, "kind": kind, "count": 1}]
    return cast(dict[str, Any], _without_defaults(doc))


def model_statistics(
    repository: ModelRepository, stats: StatsRegistry, name: str = "", version: str = ""
) -> list[dict[str, Any]]:
    """Triton's ModelStatistics of every served version (of `name`, of `version` when given), every
    field present (as Triton's HTTP API answers); NOT_FOUND for a model the server does not hold."""
    if name:
        check_name(name)
        if repository.entry(name) is None:
            raise ModelNotFound(f"unknown model '{shown(name)}'")
    snapshot = stats.snapshot()
    out = []
    for entry in repository.index():
        if name and entry.name != name:
            continue
        for v in sorted(entry.versions):
            if version and version != str(v):
                continue
            doc: dict[str, Any] = {"name": entry.name, "version": str(v)}
            s = snapshot.get((entry.name, v))
            if s is not None:
                doc |= {
                    "last_inference": s.last_inference_ms,
                    "inference_count": s.inference_count,
                    "execution_count": s.execution_count,
                    "inference_stats": {f: _duration(getattr(s, f)) for f in DURATIONS},
                    "batch_stats": [
                        {"batch_size": size, "compute_infer": _duration(d)} for size, d in sorted(s.batch_sizes.items())
                    ],
                }
            out.append(doc)
    return out


def repository_index(repository: ModelRepository, ready: bool = False) -> list[dict[str, str]]:
    """Triton's RepositoryIndex: a row per loaded version (per model when none is loaded, with the
    reason); only READY models when `ready`. Empty fields are left out."""
    rows = []
    for entry in repository.index():
        if ready and entry.state is not State.READY:
            continue
        if entry.versions:
            rows += [
                {"name": entry.name, "version": str(v), "state": entry.state.value} for v in sorted(entry.versions)
            ]
        else:
            rows.append({"name": entry.name, "state": entry.state.value, "reason": entry.reason})
    return [{k: v for k, v in row.items() if v} for row in rows]


def _config_type(datatype: str) -> str:
    """Triton's config DataType of a protocol datatype (BYTES is TYPE_STRING there)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def _without_defaults(value: Any) -> Any:
    """`value` with the dict entries that hold 0, "", False or None left out, recursively (list
    elements are kept: a dimension may be 0)."""
    if isinstance(value, dict):
        return {k: _without_defaults(v) for k, v in value.items() if v is not None and not (v in (0, "") or v is False)}
    if isinstance(value, list):
        return [_without_defaults(v) for v in value]
    return value
