"""Model repository layout: `<repo>/<model>/config.yaml` beside `<repo>/<model>/<version>/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.checkpoint import Checkpoint
from models.components.spec import Component, ExportSpec
from runtime.config import CONFIG_FILE, TORCH_DIR, BackendConfig, ComponentConfig, DynamicBatching, ModelConfig

# Dynamic batching as exported. It must keep batch-1 latency (at 1 client attnserve must stay as fast
# as with batching off: benchmarks/throughput_report.py's criteria) and bound the work a burst can pile up:
# - max_queue_delay_microseconds 0: an idle model runs a request at once, and requests that arrive
#   while a batch computes form the next one; the wait is the running batch, never a timer.
# - preferred_batch_size empty: take every compatible queued request up to max_batch_size (64).
#   Triton advises preferred sizes only where some sizes run much faster; the graphs' batch axis
#   is symbolic and, on CPU, a batch cut to a preferred size leaves the rest for one more call.
# - max_queue_size 256: with 32-64 clients (the benchmark's sweep) the queue holds at most one
#   request per client, far below the bound; 256 batch-1 requests are 4 full batches of 64, so a
#   request that is admitted waits at most about 4 batch times (a few hundred ms on the 2-core
#   machine for dates-additive), and a burst beyond that gets RESOURCE_EXHAUSTED at once instead
#   of waiting tens of seconds (200 slow requests once waited up to 36 s).
# - default_timeout_microseconds 0: no server-side limit; the client's deadline or `timeout` rules.
DEFAULT_BATCHING = DynamicBatching(max_queue_delay_microseconds=0, max_queue_size=256)


def exported_batching(enabled: bool = True, **given: Any) -> DynamicBatching | None:
    """The `dynamic_batching` an export writes: DEFAULT_BATCHING with the fields `given` (None keeps the
    default), or None (every request runs alone) when not `enabled`. ValueError on a bad value."""
    if not enabled:
        return None
    batching = DynamicBatching.model_validate(
        {**DEFAULT_BATCHING.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    )
    limit = ModelConfig.model_fields["max_batch_size"].default
    if any(size > limit for size in batching.preferred_batch_size):
        raise ValueError(f"preferred batch sizes {batching.preferred_batch_size} exceed max_batch_size {limit}")
    return batching


def batching_json(batching: DynamicBatching | None) -> str:
    """`batching` as an argument of the export worker: JSON, "null" for none."""
    return json.dumps(batching.model_dump() if batching is not None else None)


def parse_batching_json(text: str) -> DynamicBatching | None:
    """The inverse of `batching_json`."""
    data = json.loads(text)
    return None if data is None else DynamicBatching.model_validate(data)


def model_config(
    ck: Checkpoint,
    spec: ExportSpec,
    components: list[Component],
    int8: bool,
    batching: DynamicBatching | None = DEFAULT_BATCHING,
) -> ModelConfig:
    """The config.yaml of an exported checkpoint (its int8 twin runs on ONNX Runtime only, unbatched)."""
    comps = {
        c.spec.name: ComponentConfig(
            file=f"{c.spec.name}.onnx",
            inputs=c.spec.inputs,
            outputs=c.spec.outputs,
        )
        for c in components
    }
    backends = [BackendConfig(name="onnxruntime")]
    if not int8:
        backends.append(BackendConfig(name="torch", artifact=TORCH_DIR))
    return ModelConfig(
        name=f"{ck.name}-int8" if int8 else ck.name,
        family=ck.recipe.family,
        attention=ck.recipe.attention,
        components=comps,
        vocabs=dict(ck.config["vocabs"]),
        **spec.serving_facts(ck.family),
        backends=backends,
        # An int8 twin runs alone: ONNX Runtime's dynamic quantization scales activations over the
        # whole batch, so a row's answer would depend on its batch-mates (attention moves by ~1e-2).
        dynamic_batching=None if int8 else batching,
        source_checkpoint=ck.name,
        int8=int8,
    )


def write_model(
    repository: Path,
    ck: Checkpoint,
    spec: ExportSpec,
    components: list[Component],
    int8: bool,
    batching: DynamicBatching | None = DEFAULT_BATCHING,
) -> Path:
    """Write `<repo>/<model>/config.yaml`; returns its path."""
    cfg = model_config(ck, spec, components, int8, batching)
    path = repository / cfg.name / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    return path
