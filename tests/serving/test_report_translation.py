"""`attnserve report`'s translation part from recorded figures: table with intervals and baselines,
separated variants, quality by length, the ranking beside Luong et al., and its plots."""

from __future__ import annotations

from pathlib import Path

from cli.report import translation
from cli.report.figures import ModelFigures
from cli.report.measure import Latency
from cli.report.render import Report, markdown

PNG = b"\x89PNG\r\n\x1a\n"
BASELINES = {
    "copy": {"chrf": 34.9, "chrf_ci95": [34.0, 35.8], "p_vs_best": 0.0, "bleu": 15.9, "by_length": []},
    "nearest-neighbour": {"chrf": 34.3, "chrf_ci95": [33.4, 35.1], "p_vs_best": 0.0, "bleu": 9.6, "by_length": []},
}


def figures(variant: str, chrf: float, lo: float, hi: float) -> ModelFigures:
    name = f"debian-translate-{'transformer' if variant == 'multihead' else variant}"
    extra = {
        "chrf": chrf, "chrf_ci95": [lo, hi], "p_vs_best": 0.01, "bleu": chrf / 3, "train_cpu_seconds": 300.2,
        "chrf_signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0",
        "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
        "by_length": [{"chars": "1-20", "n": 300, "chrf": chrf + 5}, {"chars": "21-30", "n": 400, "chrf": chrf - 2}],
        "baselines": BASELINES,
    }  # fmt: skip
    return ModelFigures(
        name=name, checkpoint=name, dataset="debian-translate", task="translate", family="seq2seq",
        attention=variant, int8=False, backends=("onnxruntime", "torch"), max_input_length=64, metric="chrf",
        value=chrf / 100, n=1689, extra=extra, parameters=443_066, flops_per_request=2.1e8, training_flops=1e14,
    )  # fmt: skip


def report() -> Report:
    models = [
        figures("additive", 44.0, 43.1, 44.9),
        figures("location", 38.0, 37.2, 38.9),
        figures("dot", 43.5, 42.6, 44.4),
    ]
    lat = {
        m.name: {"onnxruntime": Latency(n=5, p50_ms=3.0 + i, p99_ms=5.0, source="measured")}
        for i, m in enumerate(models)
    }
    return Report(generated="now", repository="r", latency_source="s", models=models, latency=lat)


def test_translation_comes_first_with_intervals_baselines_and_separated_pairs():
    text = markdown(report())
    assert text.index("## Translation") < text.index("## Quality per attention variant")
    assert "| additive | debian-translate-additive | 44.0 [43.1, 44.9] | 14.7 | best | 443 k |" in text
    assert "| baseline | copy | 34.9 [34.0, 35.8] | 15.9 | 0.000 |" in text
    assert "The best model, **additive** (44.0), scores 1.26x the better baseline's chrF (34.9)." in text
    assert "2 pairs of variants differ beyond their 95 % intervals: additive > location, dot > location." in text
    assert "| additive | 49.0 | 42.0 |" in text  # by length
    assert "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0" in text


def test_the_ranking_is_set_beside_luong_et_al():
    text = markdown(report())
    assert "Luong, Pham and Manning (2015)" in text and "local-p with the general score is the best" in text
    assert "| 3 | location | 38.0 | global location: behind the content-based scores |" in text
    assert "location-based attention is behind 2 of the 2 content-based scores" in text


def test_no_translation_models_no_section():
    assert translation.section(Report(generated="n", repository="r", latency_source="s", models=[], latency={})) == []


def test_translation_plots_are_drawn(tmp_path: Path):
    paths = translation.draw(report(), tmp_path, checkpoints=None)
    assert [p.name for p in paths] == [translation.PLOTS[k] for k in ("quality", "length", "cost")]
    assert all(p.read_bytes().startswith(PNG) for p in paths)
