"""The report's charts (matplotlib, Agg): quality per variant, FLOPs and latency per model, and the
reference models' parameters and training compute on log scales beside the seed's models."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from cli.report.render import PLOTS, Report, variant_rows


def _save(fig: plt.Figure, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def quality(report: Report, out: Path) -> Path:
    """Grouped bars: held-out exact match on dates and dates-in-text per attention variant."""
    rows = variant_rows(report.models)
    variants = list(rows)
    x = np.arange(len(variants))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(variants) + 2), 3.6))
    for offset, dataset in ((-0.2, "dates"), (0.2, "dates-in-text")):
        values = [rows[v][dataset].value if dataset in rows[v] else np.nan for v in variants]
        bars = ax.bar(x + offset, values, width=0.4, label=dataset)  # type: ignore[arg-type]  # a variant without the figure draws no bar
        ax.bar_label(bars, fmt="%.4f", fontsize=5, padding=1)
    ax.axhline(0.95, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, variants, rotation=20, fontsize=8)
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Quality per attention variant", fontsize=10)
    return _save(fig, out)


def cost(report: Report, out: Path) -> Path:
    """FLOPs per request against served p50 per backend, one point per model and backend."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    backends = sorted({b for lat in report.latency.values() for b in lat})
    for marker, backend in zip("os^v", backends, strict=False):
        points = [
            (m.flops_per_request, report.latency[m.name][backend].p50_ms, m.name)
            for m in report.models
            if m.flops_per_request and backend in report.latency.get(m.name, {})
        ]
        if not points:
            continue
        xs, ys, _ = zip(*points, strict=True)
        ax.scatter(xs, ys, marker=marker, label=backend, s=22)
        if backend == "onnxruntime":
            for px, py, name in points:
                ax.annotate(
                    name.removeprefix("dates-"), (px, py), fontsize=6, xytext=(3, 2), textcoords="offset points"
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("FLOPs per request (held-out mean)")
    ax.set_ylabel("served p50 (ms, batch 1)")
    ax.legend(fontsize=8)
    ax.set_title("Compute and latency per model", fontsize=10)
    return _save(fig, out)


def scale(report: Report, out: Path) -> Path:
    """Two log-scale bar charts: parameters, and training compute in PF-days (seed models where published)."""
    ours = sorted((m for m in report.models if not m.int8 and m.parameters), key=lambda m: m.parameters or 0)
    seed = sorted(report.seed_models, key=lambda p: p.parameters)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, max(4.0, 0.22 * (len(ours) + len(seed)) + 1.5)))
    names = [m.name for m in ours] + [f"{p.name} ({p.year})" for p in seed]
    colors = ["tab:blue"] * len(ours) + ["tab:orange"] * len(seed)
    params = [float(m.parameters or 0) for m in ours] + [p.parameters for p in seed]
    left.barh(names, params, color=colors)
    left.set_xscale("log")
    left.set_xlabel("parameters")
    left.tick_params(axis="y", labelsize=7)
    compute = [m.training_pf_days or np.nan for m in ours] + [p.petaflop_s_days or np.nan for p in seed]
    right.barh(names, compute, color=colors)
    right.set_xscale("log")
    right.set_xlabel("training compute (petaflop/s-days)")
    right.tick_params(axis="y", labelleft=False)
    for i, value in enumerate(compute):
        if np.isnan(value):
            right.text(0.02, i, "not published", transform=right.get_yaxis_transform(), fontsize=6, va="center",
                       color="grey")  # fmt: skip
    fig.suptitle(
        "attnserve's reference models (blue) beside the seed's models (orange, published figures)", fontsize=10
    )
    return _save(fig, out)


def draw_all(report: Report, out_dir: Path) -> list[Path]:
    return [
        quality(report, out_dir / PLOTS["quality"]),
        cost(report, out_dir / PLOTS["cost"]),
        scale(report, out_dir / PLOTS["scale"]),
    ]
