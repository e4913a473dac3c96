"""Model repository layout: `<repo>/<model>/config.yaml` beside `<repo>/<model>/<version>/`."""

from __future__ import annotations

from pathlib import Path

from models.checkpoint import Checkpoint
from models.components.spec import Component, ExportSpec
from runtime.config import CONFIG_FILE, TORCH_DIR, BackendConfig, ComponentConfig, DynamicBatching, ModelConfig

# Dynamic batching as exported: no added wait (an idle model runs a request at once; requests that
# arrive while it computes form the next batch), and a bounded queue.
DEFAULT_BATCHING = DynamicBatching(max_queue_delay_microseconds=0, max_queue_size=256)


def model_config(ck: Checkpoint, spec: ExportSpec, components: list[Component], int8: bool) -> ModelConfig:
    """The config.yaml of an exported checkpoint (its int8 twin runs on ONNX Runtime only)."""
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
        dynamic_batching=DEFAULT_BATCHING,
        source_checkpoint=ck.name,
        int8=int8,
    )


def write_model(repository: Path, ck: Checkpoint, spec: ExportSpec, components: list[Component], int8: bool) -> Path:
    """Write `<repo>/<model>/config.yaml`; returns its path."""
    cfg = model_config(ck, spec, components, int8)
    path = repository / cfg.name / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    return path
