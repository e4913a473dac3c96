"""The pipeline for a model's task."""

from __future__ import annotations

from pathlib import Path

from serving.config import ModelConfig
from serving.pipelines.base import Pipeline


def build_pipeline(config: ModelConfig, version_dir: Path) -> Pipeline:
    """The pipeline for the model's task."""
    from serving.pipelines.classify import ClassifyPipeline
    from serving.pipelines.sort import SortPipeline
    from serving.pipelines.translate import TranslatePipeline

    cls = {"translate": TranslatePipeline, "sort": SortPipeline, "classify": ClassifyPipeline}[config.task]
    return cls(config, version_dir)
