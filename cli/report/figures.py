"""What the report states about each served model, read from files: the model repository (config.yaml,
flops.json, export_report.json) and the checkpoint it was exported from (config.json, metrics.json).
Nothing here runs a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from runtime.config import ModelConfig
from runtime.flops import FlopsFile


class Int8Figures(BaseModel):
    """An fp32 model's int8 twin as its export measured it (exporters/int8.py)."""

    model_config = ConfigDict(frozen=True)

    twin: str
    kept: bool
    decision: str
    speed: dict[int, float]  # batch -> int8 items/s over fp32's (median of interleaved rounds)
    metric_fp32: float | None
    metric_int8: float | None


class ModelFigures(BaseModel):
    """One served model: what it is, how good, how big, how costly to train and to serve."""

    model_config = ConfigDict(frozen=True)

    name: str
    checkpoint: str  # the checkpoint it was exported from (an int8 twin's is its fp32 model's)
    dataset: str  # the checkpoint's task: dates, dates-in-text, sorting, debian-docs
    task: str  # the served pipeline: translate, sort, classify
    family: str
    attention: str
    int8: bool
    backends: tuple[str, ...]
    max_input_length: int
    metric: str | None = None
    value: float | None = None
    n: int | None = None
    extra: dict[str, Any] = {}  # e.g. beyond_source_limit, value_within_limit, errors_by_field
    parameters: int | None = None
    flops_per_request: float | None = None
    training_flops: float | None = None
    training_pf_days: float | None = None
    int8_twin: Int8Figures | None = None

    @property
    def variant(self) -> str:
        """The attention variant as the leaderboard names it (the Transformer's is multi-head)."""
        return self.attention


def latest_version(model_dir: Path) -> Path | None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _int8(report: dict[str, Any]) -> Int8Figures | None:
    entry = report.get("int8")
    if not entry:
        return None
    metric = entry.get("task_metric") or {}
    return Int8Figures(
        twin=entry["model"],
        kept=entry["kept"],
        decision=entry["decision"],
        speed={int(s["batch"]): float(s["ratio"]) for s in entry.get("speed", [])},
        metric_fp32=metric.get("fp32"),
        metric_int8=metric.get("int8"),
    )


KNOWN = {"metric", "value", "n", "parameters", "training_compute", "steps", "train_seconds"}
TRAINING_ONLY = {"final_loss", "final_train_accuracy"}


def model_figures(model_dir: Path, checkpoints: Path) -> ModelFigures | None:
    """The figures of one model folder of a repository; None when it holds no exported version."""
    version = latest_version(model_dir)
    if version is None or not (model_dir / "config.yaml").is_file():
        return None
    config = ModelConfig.load(model_dir / "config.yaml")
    flops = FlopsFile.read(version)
    report_path = version / "export_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    source = checkpoints / (config.source_checkpoint or config.name)
    metrics = json.loads((source / "metrics.json").read_text()) if (source / "metrics.json").is_file() else {}
    dataset = json.loads((source / "config.json").read_text())["task"] if (source / "config.json").is_file() else ""
    compute = metrics.get("training_compute") or {}
    # an int8 twin is served with its own (quantized) weights: its quality is the export's measurement
    int8_metric = None
    if config.int8:
        fp32_report = model_dir.parent / (config.source_checkpoint or "") / version.name / "export_report.json"
        if fp32_report.is_file():
            twin = _int8(json.loads(fp32_report.read_text()))
            int8_metric = twin.metric_int8 if twin else None
    return ModelFigures(
        name=config.name,
        checkpoint=source.name,
        dataset=dataset,
        task=config.task,
        family=config.family,
        attention=config.attention,
        int8=config.int8,
        backends=tuple(b.name for b in config.backends),
        max_input_length=config.max_input_length,
        metric=metrics.get("metric"),
        value=int8_metric if config.int8 else metrics.get("value"),
        n=metrics.get("n"),
        extra={k: v for k, v in metrics.items() if k not in KNOWN | TRAINING_ONLY},
        parameters=flops.parameters if flops else metrics.get("parameters"),
        flops_per_request=flops.per_request.mean if flops and flops.per_request else None,
        training_flops=None if config.int8 else compute.get("flops"),
        training_pf_days=None if config.int8 else compute.get("petaflop_s_days"),
        int8_twin=_int8(report),
    )


def collect(repository: Path, checkpoints: Path) -> list[ModelFigures]:
    """Every model of the repository, by name."""
    found = (model_figures(d, checkpoints) for d in sorted(repository.iterdir()) if d.is_dir())
    return [f for f in found if f is not None]
