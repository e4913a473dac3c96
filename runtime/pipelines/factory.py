"""The pipeline for a model's task."""

from __future__ import annotations

from pathlib import Path

from runtime.config import ModelConfig
from runtime.pipelines.base import Pipeline


def pipeline_class(task: str) -> type[Pipeline]:
    """The Pipeline subclass that serves `task`."""
    from runtime.pipelines.classify import ClassifyPipeline
    from runtime.pipelines.sort import SortPipeline
    from runtime.pipelines.tensors import TensorsPipeline
    from runtime.pipelines.translate import TranslatePipeline

    classes: dict[str, type[Pipeline]] = {
        "translate": TranslatePipeline,
        "sort": SortPipeline,
        "classify": ClassifyPipeline,
        "tensors": TensorsPipeline,
    }
    try:
        return classes[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {sorted(classes)}") from None


def build_pipeline(config: ModelConfig, version_dir: Path) -> Pipeline:
    """The pipeline for the model's task, reading its vocabularies from `version_dir`."""
    return pipeline_class(config.task)(config, version_dir)
