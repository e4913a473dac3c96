"""Held-out evaluation of checkpoints, one JSON-ready record per model."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from models import checkpoint
from models.families.base import TaskData

DEFAULT_DIR = Path("checkpoints")
# what a task's `baseline` figure is (debian-docs: TF-IDF + logistic regression)
BASELINES = {"debian-translate": "chrF of the better of copying the source and nearest-neighbour retrieval"}


def find_checkpoints(root: Path = DEFAULT_DIR) -> list[Path]:
    """Every checkpoint folder directly under `root`, sorted by name."""
    return sorted(p for p in root.iterdir() if (p / checkpoint.CONFIG).is_file()) if root.is_dir() else []


def evaluate(paths: Iterable[Path], threads: int = 2) -> list[dict[str, Any]]:
    """Evaluate each checkpoint on its task's held-out split.

    Task data is built once per (task, seed) and shared; a task with a baseline
    (debian-docs: TF-IDF + logistic regression) measures it on the same split here.
    """
    torch.set_num_threads(threads)
    data_cache: dict[tuple[str, int], TaskData] = {}
    together: dict[tuple[str, int], list[tuple[int, Any, list[str]]]] = {}  # (record, family, predictions)
    baselines: dict[tuple[str, int], float | None] = {}
    results: list[dict[str, Any]] = []
    for path in paths:
        ck = checkpoint.load(path)
        key = (ck.recipe.task, ck.recipe.train.seed)
        if key not in data_cache:
            data_cache[key] = type(ck.family).load_data(ck.recipe.train.seed)
            baselines[key] = ck.family.baseline(data_cache[key])
        test = data_cache[key].test
        if hasattr(ck.family, "scores_of"):  # translation: predictions kept to set the models side by side
            predicted = ck.family.predictions(ck.model, test)
            together.setdefault(key, []).append((len(results), ck.family, predicted))
            scores = ck.family.scores_of(predicted, test)
        else:
            scores = ck.family.evaluate(ck.model, test)
        record: dict[str, Any] = {
            "model": ck.name,
            "task": ck.recipe.task,
            "attention": ck.recipe.attention,
            "metric": scores["metric"],
            "value": scores["value"],
            "n": scores["n"],
        }
        # e.g. dates-in-text's sentences beyond a model's source limit (models.families.text2text.InTextTask)
        record.update({k: v for k, v in scores.items() if k not in record})
        if baselines[key] is not None:
            record["baseline"] = baselines[key]
        results.append(record)
    for key, rows in together.items():
        _side_by_side(results, rows, data_cache[key])
    return results


def _side_by_side(records: list[dict[str, Any]], rows: list[tuple[int, Any, list[str]]], data: TaskData) -> None:
    """Translation models evaluated together on one split: each record gains its chrF's
    paired-bootstrap 95 % interval and p-value against the best of them, chrF by source length,
    and the baselines' figures on the same resamplings (models.translation_eval.compare)."""
    from models.translation_eval import compare

    family = rows[0][1]
    baselines = family.baseline_predictions(data)
    figures = compare(
        {records[i]["model"]: predicted for i, _, predicted in rows},
        baselines,
        [family.source(ex) for ex in data.test],
        [family.target(ex) for ex in data.test],
    )
    for i, _, _ in rows:
        fig = figures[records[i]["model"]]
        records[i].update({k: fig[k] for k in ("chrf_ci95", "p_vs_best", "best", "by_length")})
        records[i]["baselines"] = {name: figures[name] for name in baselines}


def write_metrics(path: Path, record: dict[str, Any]) -> None:
    """Record an evaluation in the checkpoint's metrics.json: its held-out figures replace those
    there; the training figures (loss, steps, compute) stay."""
    metrics_path = path / checkpoint.METRICS
    metrics = json.loads(metrics_path.read_text())
    metrics.update({k: v for k, v in record.items() if k not in ("model", "task", "attention")})
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table of evaluation records."""
    lines = [f"{'model':<27} {'task':<16} {'attention':<11} {'metric':<12} {'value':>7} {'n':>6}  baseline"]
    for r in records:
        base = f"{r['baseline']:.4f}" if "baseline" in r else ""
        lines.append(
            f"{r['model']:<27} {r['task']:<16} {r['attention']:<11} {r['metric']:<12} "
            f"{r['value']:>7.4f} {r['n']:>6}  {base}"
        )
    return "\n".join(lines)


def format_markdown(records: list[dict[str, Any]]) -> str:
    """The README's zoo table."""
    lines = [
        "| model | task | attention | metric | held-out value | n | baseline (same split) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        base = (
            f"{r['baseline']:.4f} ({BASELINES.get(r['task'], 'TF-IDF + logistic regression')})"
            if "baseline" in r
            else ""
        )
        if "chrf_ci95" in r:  # translation: chrF with its interval, BLEU, and the baselines' chrF
            lo, hi = r["chrf_ci95"]
            others = ", ".join(f"{name} {b['chrf']:.1f}" for name, b in r.get("baselines", {}).items())
            base = f"chrF {r['chrf']:.1f} [{lo:.1f}, {hi:.1f}], BLEU {r['bleu']:.1f}; baselines' chrF: {others}"
        if r.get("beyond_source_limit"):
            base = (
                f"{r['beyond_source_limit']} inputs beyond its {r['source_limit']}-character limit, counted wrong; "
                f"{r['value_within_limit']:.4f} on the others"
            )
        lines.append(
            f"| {r['model']} | {r['task']} | {r['attention']} | {r['metric']} | {r['value']:.4f} | {r['n']} | {base} |"
        )
    return "\n".join(lines)
