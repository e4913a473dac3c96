"""`attnserve report`: the variant leaderboard. Reads the model repository and its checkpoints,
measures served latency (a short run against a server it starts, or against `--url`; or a running
server's /metrics histograms with `--metrics-url`), and writes report.md, report.json and plots."""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.report import translation
from cli.report.figures import ModelFigures, collect
from cli.report.measure import Latency, from_metrics, held_out_requests, local_server, measure
from cli.report.plots import draw_all
from cli.report.render import Report, markdown

__all__ = ["build_report", "write_report"]


def _latency_from_server(
    address: str, report_models: list[ModelFigures], checkpoints: Path, requests: int, say: Callable[[str], None]
) -> dict[str, dict[str, Latency]]:
    cache: dict[Any, list[Any]] = {}
    latency: dict[str, dict[str, Latency]] = {}
    for m in report_models:
        inputs = held_out_requests(m, checkpoints, requests, cache)
        latency[m.name] = measure(address, m, inputs)
        say(f"{m.name}: " + ", ".join(f"{b} p50 {v.p50_ms:.2f} ms" for b, v in latency[m.name].items()))
    return latency


def build_report(
    repository: Path,
    checkpoints: Path,
    url: str | None = None,
    metrics_url: str | None = None,
    requests: int = 40,
    say: Callable[[str], None] = lambda _: None,
) -> Report:
    """Collect every figure. Latency: from `metrics_url`'s histograms when given, else measured with
    `requests` batch-1 held-out requests per model and backend against `url` (or a server started
    here over `repository`)."""
    models = collect(repository, checkpoints)
    if not models:
        raise ValueError(f"no exported model under {repository}")
    if metrics_url:
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            found = from_metrics(resp.read().decode("utf-8"))
        latency: dict[str, dict[str, Latency]] = {}
        for (model, backend), lat in found.items():
            latency.setdefault(model, {})[backend] = lat
        source = f"request duration histograms of {metrics_url} (server-side, the traffic it has served)"
    elif url:
        latency = _latency_from_server(url, models, checkpoints, requests, say)
        source = f"{requests} batch-1 held-out requests per model and backend, one client, against {url}"
    else:
        with local_server(repository) as address:
            latency = _latency_from_server(address, models, checkpoints, requests, say)
        source = (
            f"{requests} batch-1 held-out requests per model and backend, one client, against a server this "
            "report started (client-side, backends interleaved request by request)"
        )
    return Report(
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        repository=str(repository),
        latency_source=source,
        models=models,
        latency=latency,
    )


def write_report(report: Report, out_dir: Path, checkpoints: Path | None = None) -> list[Path]:
    """report.md, report.json and the plots into `out_dir`; the paths written. With `checkpoints`,
    also the best translation model's attention on held-out sentences."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown(report))
    (out_dir / "report.json").write_text(report.model_dump_json(indent=1) + "\n")
    plots = [*translation.draw(report, out_dir, checkpoints), *draw_all(report, out_dir)]
    return [out_dir / "report.md", out_dir / "report.json", *plots]
