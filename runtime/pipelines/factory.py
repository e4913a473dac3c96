"""The pipeline for a model's task, found through the `attnserve.pipelines` entry-point group.

A task is a name registered in that group (runtime.registry); attnserve's own register in its
`pyproject.toml`, and a new task is one more line there:

    [project.entry-points."attnserve.pipelines"]
    translate = "runtime.pipelines.translate:TranslatePipeline"
"""

from __future__ import annotations

from pathlib import Path

from runtime.config import ModelConfig
from runtime.pipelines.base import Pipeline
from runtime.registry import PIPELINE_GROUP, Registry, subclass_of


def pipelines() -> Registry[type[Pipeline]]:
    """The task registry: task name -> runtime.pipelines.base.Pipeline subclass."""
    return Registry(PIPELINE_GROUP, "task", subclass_of(Pipeline))


def pipeline_class(task: str) -> type[Pipeline]:
    """The Pipeline subclass that serves `task` (UnknownPlugin, a ValueError, for an unknown task)."""
    return pipelines().load(task)


def build_pipeline(config: ModelConfig, version_dir: Path) -> Pipeline:
    """The pipeline for the model's task, reading its vocabularies from `version_dir`."""
    return pipeline_class(config.task)(config, version_dir)
