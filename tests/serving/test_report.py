"""`attnserve report`: figures read from the repository and checkpoints, latency measured against a
real server (or read from its /metrics), markdown and plots written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.report import build_report, write_report
from cli.report.figures import Int8Figures, ModelFigures, collect
from cli.report.measure import Latency
from cli.report.render import Report, markdown
from tests.helpers.paths import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def in_text(variant: str, value: float, **extra) -> ModelFigures:
    return ModelFigures(
        name=f"dates-in-text-{variant}", checkpoint=f"dates-in-text-{variant}", dataset="dates-in-text",
        task="translate", family="seq2seq", attention=variant, int8=False, backends=("onnxruntime",),
        max_input_length=128, metric="exact_match", value=value, n=2000, extra=extra, parameters=400_000,
        flops_per_request=3e7, training_flops=1e13, training_pf_days=1.2e-7,
    )  # fmt: skip


def test_the_weakest_in_text_variant_is_named_with_its_limiting_factor():
    models = [
        in_text("additive", 0.99, errors_by_field={"year": 12, "month": 3, "day": 5, "malformed": 0}),
        in_text("dot", 0.97),
        in_text(
            "location", 0.31, beyond_source_limit=1300, source_limit=64, value_within_limit=0.8857,
            errors_by_field={"year": 70, "month": 10, "day": 2, "malformed": 1},
        ),
    ]  # fmt: skip
    report = Report(generated="now", repository="r", latency_source="s", models=models, latency={})
    text = markdown(report)
    assert "2 of 3 variants reach 0.95 on dates-in-text (additive, dot); of the content-based scores, 2 of 2." in text
    assert "The weakest is **location** (dates-in-text-location, 0.3100): 1300 of its 2000 held-out sentences" in text
    assert "on the 700 it can read it scores 0.8857" in text
    assert "Of its 80 misses among the sentences it reads, the year is wrong in 70, the month in 10" in text
    assert "| location | – | 0.3100 | 70 / 10 / 2 / 1 (+1300 beyond its source limit) |" in text


def test_int8_rows_say_whether_the_twin_was_kept_and_why():
    twin = Int8Figures(
        twin="dates-in-text-additive-int8", kept=False, decision="slower", speed={1: 0.98, 16: 1.04},
        metric_fp32=0.99, metric_int8=0.985,
    )  # fmt: skip
    fp32 = in_text("additive", 0.99).model_copy(update={"int8_twin": twin})
    lat = {"dates-in-text-additive": {"onnxruntime": Latency(n=5, p50_ms=2.0, p99_ms=3.0, source="measured")}}
    text = markdown(Report(generated="now", repository="r", latency_source="s", models=[fp32], latency=lat))
    assert (
        "| dates-in-text-additive | dates-in-text-additive-int8 | no | 0.98× | 1.04× | 0.9900 | 0.9850 | "
        "not served (not kept) |"
    ) in text
    assert "| dates-in-text-additive | additive | 0.9900 exact_match | 400 k | 30 M | 1.2e-07 | 2.00 / 3.00 |" in text


def test_figures_of_the_reference_repository(reference_repository: Path):
    models = {m.name: m for m in collect(reference_repository, ROOT / "checkpoints")}
    assert set(models) == {p.parent.name for p in reference_repository.glob("*/config.yaml")}
    additive = models["dates-additive"]
    assert additive.dataset == "dates" and additive.value is not None and additive.parameters
    assert additive.flops_per_request and additive.training_pf_days and additive.int8_twin is not None
    assert models["dates-additive-int8"].checkpoint == "dates-additive"


def test_report_against_a_running_server_and_from_its_metrics(server, reference_repository: Path, tmp_path: Path):
    measured = build_report(reference_repository, ROOT / "checkpoints", url=server.address, requests=3)
    assert {m.name for m in measured.models} == set(measured.latency)
    for m in measured.models:
        assert set(measured.latency[m.name]) == set(m.backends), m.name
        assert all(lat.n == 3 and 0 < lat.p50_ms <= lat.p99_ms for lat in measured.latency[m.name].values())
    written = write_report(measured, tmp_path)
    assert [p.name for p in written] == ["report.md", "report.json", "quality.png", "cost.png", "scale.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written[2:])
    text = (tmp_path / "report.md").read_text()
    assert all(f"| {m.name} |" in text for m in measured.models)
    assert Report.model_validate_json((tmp_path / "report.json").read_text()) == measured

    server.settle()
    from_metrics = build_report(
        reference_repository, ROOT / "checkpoints", metrics_url=f"http://127.0.0.1:{server.app.metrics_port}/metrics"
    )
    for m in measured.models:  # every request above was served and counted
        for backend in m.backends:
            lat = from_metrics.latency[m.name][backend]
            assert lat.source == "metrics" and lat.n >= 3 + 3 and lat.p50_ms > 0, (m.name, backend)


def test_the_command_starts_its_own_server(reference_repository: Path, tmp_path: Path):
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "report", "-o", str(out), "--repository", str(reference_repository),
         "--checkpoints", str(ROOT / "checkpoints"), "--requests", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out / 'report.md'}" in done.stdout
    assert "against a server this report started" in (out / "report.md").read_text()


def test_an_empty_repository_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="no exported model"):
        build_report(tmp_path, ROOT / "checkpoints")


def test_the_committed_report_is_current_and_the_readme_shows_it():
    committed = Report.model_validate_json((ROOT / "docs" / "report" / "report.json").read_text())
    recorded = {p.name: json.loads((p / "metrics.json").read_text())["value"] for p in (ROOT / "checkpoints").iterdir()}
    fp32 = {m.name: m.value for m in committed.models if not m.int8}
    assert fp32 == recorded  # every reference model, with the figure its checkpoint records
    report = (ROOT / "docs" / "report" / "report.md").read_text()
    assert report == markdown(committed)
    start = report.index("| attention variant |")
    table = report[start : report.index("\n\n", start)]
    assert table in (ROOT / "README.md").read_text()
    for plot in ("quality.png", "cost.png", "scale.png"):
        assert (ROOT / "docs" / "report" / plot).read_bytes().startswith(PNG)
        assert f"(docs/report/{plot})" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_report_without_a_repository_says_where_it_looked_and_how_to_build_one(tmp_path, monkeypatch, capsys, state):
    from cli.main import main

    monkeypatch.chdir(tmp_path)
    if state == "empty":
        (tmp_path / "model_repository").mkdir()
    assert main(["report", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    found = "does not exist" if state == "missing" else "holds no model (no <name>/ folder)"
    assert f"attnserve report: model repository model_repository (under {tmp_path}) {found}" in err, err
    assert "bash scripts/build-repository.sh" in err and "attnserve export --all --repository model_repository" in err
    assert "Errno" not in err and not (tmp_path / "out").exists()
    assert main(["report", "--repository", str(tmp_path / "elsewhere")]) == 2  # an absolute path is shown as given
    assert f"model repository {tmp_path / 'elsewhere'} does not exist; build one" in capsys.readouterr().err
