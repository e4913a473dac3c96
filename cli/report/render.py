"""The report as markdown: quality per attention variant (with the weakest dates-in-text variant's
limiting factor), cost per model, int8 against fp32, and scale beside the seed's models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from cli.report.figures import ModelFigures
from cli.report.measure import Latency
from cli.report.published import SEED_MODELS, Published

VARIANT_ORDER = ("concat", "additive", "bilinear", "dot", "scaled-dot", "location", "local-p", "hard", "multihead")
CONTENT_BASED = ("concat", "additive", "bilinear", "dot", "scaled-dot")  # scores from the query and the keys
PLOTS = {"quality": "quality.png", "cost": "cost.png", "scale": "scale.png"}


class Report(BaseModel):
    """Everything a report states; `report.json` is this, the markdown and plots are drawn from it."""

    model_config = ConfigDict(frozen=True)

    generated: str
    repository: str
    latency_source: str
    models: list[ModelFigures]
    latency: dict[str, dict[str, Latency]]  # model -> backend -> latency
    seed_models: tuple[Published, ...] = SEED_MODELS


def si(value: float | None, unit: str = "") -> str:
    """1.69e7 -> "16.9 M"."""
    if value is None:
        return "–"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def count(value: float | None) -> str:
    """A parameter count: 4.22e5 -> "422 k", 1.75e11 -> "175 B"."""
    if value is None:
        return "–"
    for factor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:.0f}"


def sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def latency_cell(lat: Latency | None) -> str:
    return "–" if lat is None else f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f}"


def variant_rows(models: Sequence[ModelFigures]) -> dict[str, dict[str, ModelFigures]]:
    """Variant -> dataset -> its fp32 model, for the dates and dates-in-text models."""
    rows: dict[str, dict[str, ModelFigures]] = {}
    for m in models:
        if m.dataset in ("dates", "dates-in-text") and not m.int8:
            rows.setdefault(m.variant, {})[m.dataset] = m
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return dict(sorted(rows.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def limiting_factor(model: ModelFigures) -> str:
    """Why a dates-in-text model misses, from its recorded evaluation."""
    extra = model.extra
    n = model.n or 0
    parts = []
    beyond = int(extra.get("beyond_source_limit", 0))
    if beyond:
        parts.append(
            f"{beyond} of its {n} held-out sentences are longer than the {extra['source_limit']} source positions it "
            f"was built with and count as misses; on the {n - beyond} it can read it scores "
            f"{extra['value_within_limit']:.4f}."
        )
        if model.attention == "location":
            parts.append(
                "Location-based attention scores positions from the decoder state alone (`softmax(W s)`), so "
                "its width is fixed when the model is built: the server refuses longer inputs and says so."
            )
    errors = extra.get("errors_by_field")
    if errors:
        misses = round((1 - float(extra.get("value_within_limit", model.value or 0))) * (n - beyond))
        parts.append(
            f"Of its {misses} misses among the sentences it reads, the year is wrong in {errors['year']}, the month "
            f"in {errors['month']}, the day in {errors['day']}; {errors['malformed']} are no ISO date."
        )
    return " ".join(parts) or "no figures beyond the held-out score were recorded."


def quality_section(report: Report) -> list[str]:
    lines = [
        "## Quality per attention variant",
        "",
        "Held-out exact match of the ISO date (2,000 held-out examples each; `attnserve evaluate`). `dates`: a date "
        "alone (~30 characters); `dates-in-text`: the date inside a 40-120 character sentence among distractor "
        "numbers, amounts, times and years; its held-out dates are never in a training sentence.",
        "",
        "| attention variant | dates | dates-in-text | dates-in-text misses: year / month / day / malformed |",
        "|---|---|---|---|",
    ]
    rows = variant_rows(report.models)
    for variant, by_set in rows.items():
        in_text = by_set.get("dates-in-text")
        errors = in_text.extra.get("errors_by_field") if in_text else None
        err = " / ".join(str(errors[k]) for k in ("year", "month", "day", "malformed")) if errors else "–"
        if in_text is not None and in_text.extra.get("beyond_source_limit"):
            err += f" (+{in_text.extra['beyond_source_limit']} beyond its source limit)"
        dates = by_set.get("dates")
        lines.append(
            f"| {variant} | {score(dates.value if dates else None)} | "
            f"{score(in_text.value if in_text else None)} | {err} |"
        )
    in_text_models = [m for m in report.models if m.dataset == "dates-in-text" and not m.int8 and m.value is not None]
    if in_text_models:
        weakest = min(in_text_models, key=lambda m: m.value or 0.0)
        strong = [m.variant for m in in_text_models if (m.value or 0) >= 0.95]
        content = [m for m in in_text_models if m.variant in CONTENT_BASED]
        lines += [
            "",
            f"{len(strong)} of {len(in_text_models)} variants reach 0.95 on dates-in-text"
            + (f" ({', '.join(strong)})" if strong else "")
            + f"; of the content-based scores, {sum((m.value or 0) >= 0.95 for m in content)} of {len(content)}.",
            f"The weakest is **{weakest.variant}** ({weakest.name}, {score(weakest.value)}): "
            + limiting_factor(weakest),
        ]
    return lines


def cost_section(report: Report) -> list[str]:
    backends = sorted({b for lat in report.latency.values() for b in lat})
    both = {"torch", "onnxruntime"} <= set(backends)
    lines = [
        "## Cost per model",
        "",
        f"Served latency: {report.latency_source}. FLOPs per request: the mean over held-out requests each served "
        "alone (encoder + every decoder step run), from the exported graphs (`flops.json`, 2 FLOPs per "
        "multiply-add). Training compute: FLOPs per step (torch FlopCounterMode) × steps.",
        "",
        "| model | attention | held-out | parameters | FLOPs / request | training (PF-days) | "
        + " | ".join(f"{b} p50 / p99 ms" for b in backends)
        + (" | torch ÷ onnxruntime (p50) |" if {"torch", "onnxruntime"} <= set(backends) else " |"),
        "|---|---|---|---|---|---|"
        + "---|" * len(backends)
        + ("---|" if {"torch", "onnxruntime"} <= set(backends) else ""),
    ]
    for m in report.models:
        lat = report.latency.get(m.name, {})
        cells = [latency_cell(lat.get(b)) for b in backends]
        row = (
            f"| {m.name} | {m.attention} | {score(m.value)} {m.metric or ''} | {count(m.parameters)} | "
            f"{si(m.flops_per_request)} | {sci(m.training_pf_days)} | " + " | ".join(cells) + " |"
        )
        if both:
            ort, pt = lat.get("onnxruntime"), lat.get("torch")
            row += f" {pt.p50_ms / ort.p50_ms:.2f}× |" if ort and pt else " – |"
        lines.append(row)
    return lines


def int8_section(report: Report) -> list[str]:
    lines = [
        "## int8 against fp32",
        "",
        "`attnserve export --quantize int8` measures both pipelines on the same held-out requests (5 interleaved "
        "rounds, medians) and keeps the int8 twin only when it is at least 10 % faster at batch 1 or 16 and "
        "within one point of fp32's metric (exporters/int8.py).",
        "",
        "| model | int8 twin | kept | int8 ÷ fp32 items/s, batch 1 | batch 16 | metric fp32 | metric int8 | "
        "served p50 fp32 → int8 (onnxruntime) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {m.name for m in report.models}
    asked = [m for m in report.models if m.int8_twin is not None]
    for m in asked:
        t = m.int8_twin
        assert t is not None
        fp32 = report.latency.get(m.name, {}).get("onnxruntime")
        int8 = report.latency.get(t.twin, {}).get("onnxruntime") if t.twin in names else None
        served = f"{fp32.p50_ms:.2f} → {int8.p50_ms:.2f} ms" if fp32 and int8 else "not served (not kept)"
        lines.append(
            f"| {m.name} | {t.twin} | {'yes' if t.kept else 'no'} | {t.speed.get(1, float('nan')):.2f}× | "
            f"{t.speed.get(16, float('nan')):.2f}× | {score(t.metric_fp32)} | {score(t.metric_int8)} | {served} |"
        )
    if not asked:
        lines.append("| (no model of this repository was exported with `--quantize int8`) | | | | | | | |")
    return lines


def scale_section(report: Report) -> list[str]:
    ours = [m for m in report.models if not m.int8 and m.parameters is not None]
    lines = [
        "## Scale beside the seed's models",
        "",
        "Parameters and total training compute (petaflop/s-days, 1 PF-day = 10^15 operations per second for a "
        "day ≈ 8.64 × 10^19 operations) of every reference model, beside the published figures of the "
        "models the project's seed names. The seed's figures are quoted, not measured here.",
        "",
        "| model | parameters | training compute (PF-days) | source |",
        "|---|---|---|---|",
    ]
    for p in sorted(report.seed_models, key=lambda p: p.parameters):
        lines.append(f"| {p.name} ({p.year}) | {count(p.parameters)} | {sci(p.petaflop_s_days)} | {p.source} |")
    for m in sorted(ours, key=lambda m: m.parameters or 0):
        lines.append(f"| {m.name} | {count(m.parameters)} | {sci(m.training_pf_days)} | this repository |")
    if ours:
        biggest = max(m.parameters or 0 for m in ours)
        most = max((m.training_pf_days or 0 for m in ours), default=0)
        gpt3 = next(p for p in report.seed_models if p.name == "GPT-3")
        lines += [
            "",
            f"GPT-3 has {gpt3.parameters / biggest:.2g} times the parameters of the largest model here"
            + (
                f" and took {gpt3.petaflop_s_days / most:.2g} times the training compute of the costliest."
                if most and gpt3.petaflop_s_days
                else "."
            ),
        ]
    return lines


def markdown(report: Report, plots: Mapping[str, str] = PLOTS) -> str:
    """The whole report; `plots` names the image files beside it."""
    from cli.report import translation  # it draws on this module's helpers

    lines = [
        "# attnserve: attention variants compared",
        "",
        f"Generated by `attnserve report` at {report.generated} from `{report.repository}` "
        f"({len(report.models)} models).",
        "",
        *translation.section(report),
        f"![quality per variant]({plots['quality']})",
        "",
        *quality_section(report),
        "",
        f"![FLOPs and latency per model]({plots['cost']})",
        "",
        *cost_section(report),
        "",
        *int8_section(report),
        "",
        f"![parameters and training compute]({plots['scale']})",
        "",
        *scale_section(report),
        "",
    ]
    return "\n".join(lines)
