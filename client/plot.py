"""Attention heatmaps: output steps x input tokens, or the HAN's word and sentence weights."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from runtime.attention_map import AttentionMap


def plot_alignment(amap: AttentionMap, title: str, out: Path) -> Path:
    """Heatmap of amap.weights [rows, cols] with token labels."""
    rows, cols = amap.weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * cols + 2), max(3.0, 0.32 * rows + 1.5)))
    ax.imshow(amap.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), [c if c.strip() else "␣" for c in amap.cols], fontsize=8)
    ax.set_yticks(range(rows), amap.rows, fontsize=8)
    ax.set_xlabel("input")
    ax.set_ylabel("output step")
    ax.set_title(f"{title}\n→ {amap.prediction}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_hierarchical(amap: AttentionMap, title: str, out: Path) -> Path:
    """Word weights per sentence (words written in cells) beside the sentence weights."""
    words: list[list[str]] = amap.extra["words"]
    sent_w = np.asarray(amap.extra["sentence_weights"])
    n_sent = len(words)
    width = max(len(w) for w in words) if words else 1
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(min(2 + 0.9 * width, 30), 1.2 + 0.45 * n_sent), width_ratios=[6, 1])
    grid = amap.weights[:n_sent, :width]
    ax.imshow(grid, cmap="Oranges", vmin=0.0, vmax=max(float(grid.max()), 1e-6), aspect="auto")
    for i, sent in enumerate(words):
        for j, word in enumerate(sent[:width]):
            ax.text(j, i, word, ha="center", va="center", fontsize=6)
    ax.set_yticks(range(n_sent), [f"s{i}" for i in range(n_sent)], fontsize=8)
    ax.set_xticks([])
    ax.set_title(f"{title}: word attention → {amap.prediction}", fontsize=9)
    bx.barh(range(n_sent), sent_w[:n_sent], color="tab:blue")
    bx.set_ylim(n_sent - 0.5, -0.5)
    bx.set_xlim(0, 1)
    bx.set_yticks([])
    bx.set_title("sentence", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot(amap: AttentionMap, title: str, out: Path) -> Path:
    """The right picture for the map's kind."""
    if "sentence_weights" in amap.extra:
        return plot_hierarchical(amap, title, out)
    return plot_alignment(amap, title, out)
