"""Model repository layout: `<repo>/<model>/config.yaml` beside `<repo>/<model>/<version>/`."""

from __future__ import annotations

from pathlib import Path

from exporters.spec import Component, ExportSpec
from models.checkpoint import Checkpoint
from serving.config import CONFIG_FILE, BackendConfig, ComponentConfig, ModelConfig, TensorConfig

TASKS = {"seq2seq": "translate", "transformer": "translate", "pointer": "sort", "han": "classify"}


def max_input_length(ck: Checkpoint) -> int:
    """Longest input the model accepts: characters, values, or words per sentence."""
    cfg = ck.config["model"]
    if ck.recipe.family == "seq2seq":
        return int(cfg["max_src_len"])
    if ck.recipe.family == "transformer":
        return int(cfg["max_len"])
    if ck.recipe.family == "han":
        return int(cfg["max_words"])
    from models.data import sorting

    return 2 * sorting.MAX_LEN


def model_config(ck: Checkpoint, spec: ExportSpec, components: list[Component], int8: bool) -> ModelConfig:
    """The config.yaml of an exported checkpoint (its int8 twin runs on ONNX Runtime only)."""
    comps = {
        c.spec.name: ComponentConfig(
            file=f"{c.spec.name}.onnx",
            inputs=[TensorConfig(**t.to_json()) for t in c.spec.inputs],
            outputs=[TensorConfig(**t.to_json()) for t in c.spec.outputs],
        )
        for c in components
    }
    backends = [BackendConfig(name="onnxruntime")]
    if not int8:
        backends.append(BackendConfig(name="torch", artifact="torch"))
    labels = ck.family.labels if ck.recipe.family == "han" else []
    return ModelConfig(
        name=f"{ck.name}-int8" if int8 else ck.name,
        task=TASKS[ck.recipe.family],  # type: ignore[arg-type]
        family=ck.recipe.family,
        attention=ck.recipe.attention,
        components=comps,
        decode=getattr(spec, "decode", None),
        vocabs=dict(ck.config["vocabs"]),
        labels=list(labels),
        max_input_length=max_input_length(ck),
        max_sentences=int(ck.config["model"].get("max_sents", 64)),
        value_range=(0, int(ck.config["model"]["max_value"])) if ck.recipe.family == "pointer" else None,
        backends=backends,
        source_checkpoint=ck.name,
        int8=int8,
    )


def write_model(
    repository: Path, ck: Checkpoint, spec: ExportSpec, components: list[Component], int8: bool
) -> Path:
    """Write `<repo>/<model>/config.yaml`; returns its path."""
    cfg = model_config(ck, spec, components, int8)
    path = repository / cfg.name / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    return path
