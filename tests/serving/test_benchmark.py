"""benchmarks/serve_latency.py runs end to end (a few requests, with a baseline server) and writes its tables.

No timing is asserted: speed is read from the benchmark's own output, never tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT


def test_serve_latency_benchmark_writes_json_and_markdown(reference_repository: Path, tmp_path: Path):
    out_json, out_md = tmp_path / "latency.json", tmp_path / "performance.md"
    cmd = [sys.executable, "benchmarks/serve_latency.py", "--repository", str(reference_repository),
           "--models", "debian-han,sort-pointer", "--requests", "10", "--port", "0",
           "--json", str(out_json), "--markdown", str(out_md), "--baseline", str(ROOT)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's packages, whichever one is pip-installed
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    results = json.loads(out_json.read_text())
    assert set(results["models"]) == {"debian-han", "sort-pointer"}
    for row in results["models"].values():
        assert row["in_process"]["n"] == row["served_onnxruntime"]["n"] == row["served_torch"]["n"] == 10
        assert row["grpc_overhead_p50_ms"] == row["served_onnxruntime"]["p50_ms"] - row["in_process"]["p50_ms"]
        assert row["above_floor_p50_ms"] == row["grpc_overhead_p50_ms"] - row["server_live_p50_ms"]
        # the bare server ran the same pipeline in the same rotation
        assert row["bare_grpc"]["n"] == 10
        assert row["over_bare_grpc_p50_ms"] == row["served_onnxruntime"]["p50_ms"] - row["bare_grpc"]["p50_ms"]
        # this checkout served again as its own baseline, in the same rotation
        assert row["baseline_onnxruntime"]["n"] == 10 and row["served_vs_baseline"] > 0
    assert results["server_live_rpc"]["n"] == 20
    assert results["switches_per_empty_rpc"] > 0 and results["baseline_switches_per_empty_rpc"] > 0
    table = out_md.read_text()
    assert "| debian-han | classify | additive |" in table and "above the empty RPC" in table
    assert f"baseline server run from `{ROOT}`, a checkout of commit " in table
    assert "times per empty RPC (the baseline's: " in table
    assert "| attnserve over the bare server (ms) |" in table


def test_serve_throughput_quick_run_covers_every_mode_criterion_and_scenario(
    reference_repository: Path, tmp_path: Path
):
    out_json, out_md = tmp_path / "throughput.json", tmp_path / "performance.md"
    out_md.write_text("<!-- serve_latency -->\nlatency tables\n<!-- /serve_latency -->\n")
    cmd = [sys.executable, "benchmarks/serve_throughput.py", "--repository", str(reference_repository), "--quick",
           "--work", str(tmp_path / "work"), "--json", str(out_json), "--markdown", str(out_md)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600)
    results = json.loads(out_json.read_text())
    # iteration-level decoding runs, or is reported unavailable with the server's reason
    iteration = "iteration" in results["modes"]
    assert iteration != ("iteration" in results["unavailable"])
    if not iteration:
        assert "decode_batching" in results["unavailable"]["iteration"]
    cells = {(r["workload"], r["mode"], r["clients"]) for r in results["runs"]}
    wanted = {"dates-additive": ["off", "dynamic", "in_process"], "debian-han": ["off", "dynamic", "in_process"],
              "mixed": ["off", "dynamic"]}  # fmt: skip
    for workload in ("dates-additive", "mixed"):
        wanted[workload] += ["iteration"] * iteration
    for clients in (1, 32):
        assert ("", "empty", clients) in cells
        assert {(w, mode, clients) for w, modes in wanted.items() for mode in modes} <= cells
    assert not any(r["mode"] == "mlserver" for r in results["runs"])  # --quick runs no MLServer
    served = [r for r in results["runs"] if r["mode"] in ("off", "dynamic", "iteration")]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in served)
    # every criterion judged, except those that need MLServer (or iteration-level decoding, where unavailable)
    for c in results["criteria"]:
        needs = "MLServer" in c["criterion"] or (not iteration and "iteration-level" in c["criterion"])
        assert (c["passed"] is None) == needs, c
    abandoned = results["abandoned"]["dynamic"]
    assert sum(abandoned["client_codes"].values()) == abandoned["requests"]
    assert abandoned["cpu_seconds_after_clients_left"] >= 0
    flood = results["flood"]
    assert flood["refused"] + flood["answered"] + sum(flood["other"].values()) == flood["requests"]
    assert flood["health_checks"] > 0
    text = out_md.read_text()
    assert text.startswith(
        "<!-- serve_latency -->\nlatency tables\n<!-- /serve_latency -->\n\n<!-- serve_throughput -->"
    )
    assert "| attnserve, dynamic batching (request-level) |" in text and "Empty-RPC ceiling" in text
    assert "| criterion | target | measured |" in text and "against max_queue_size" in text


def test_a_benchmark_rewrites_only_its_own_section(tmp_path: Path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from markdown_section import write_section
    finally:
        sys.path.pop(0)
    doc = tmp_path / "performance.md"
    write_section(doc, "a", "first")
    write_section(doc, "b", "second")
    write_section(doc, "a", "first, again")
    assert doc.read_text() == "<!-- a -->\nfirst, again\n<!-- /a -->\n\n<!-- b -->\nsecond\n<!-- /b -->\n"


def test_access_overhead_benchmark_measures_every_configuration(reference_repository: Path, tmp_path: Path):
    out_json = tmp_path / "access.json"
    cmd = [sys.executable, "benchmarks/access_overhead.py", "--repository", str(reference_repository),
           "--requests", "10", "--json", str(out_json)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's packages, whichever one is pip-installed
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300).stdout
    results = json.loads(out_json.read_text())
    assert len(results) == 8 and all(r["n"] == 10 for r in results.values())
    assert "| infer token over TLS | ModelInfer |" in out


def test_soak_benchmark_checks_answers_and_samples_memory(reference_repository: Path, tmp_path: Path):
    out_json = tmp_path / "soak.json"
    cmd = [sys.executable, "benchmarks/soak.py", "--repository", str(reference_repository),
           "--requests", "240", "--clients", "4", "--sample", "80", "--json", str(out_json)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out_json.read_text())
    assert result["errors"] == {} and result["wrong_answers"] == {}
    assert len(result["kinds"]) == 6
    assert [n for n, _ in result["rss_mb"]] == [0, 80, 160, 240, 240]  # a sample every 80, and the last
