"""benchmarks/serve_latency.py runs end to end (a few requests, with a baseline server) and writes its tables.

No timing is asserted: speed is read from the benchmark's own output, never tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_serve_latency_benchmark_writes_json_and_markdown(reference_repository: Path, tmp_path: Path):
    out_json, out_md = tmp_path / "latency.json", tmp_path / "performance.md"
    cmd = [sys.executable, "benchmarks/serve_latency.py", "--repository", str(reference_repository),
           "--models", "debian-han,sort-pointer", "--requests", "10", "--port", "0",
           "--json", str(out_json), "--markdown", str(out_md), "--baseline", str(ROOT)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
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


def test_access_overhead_benchmark_measures_every_configuration(reference_repository: Path, tmp_path: Path):
    out_json = tmp_path / "access.json"
    cmd = [sys.executable, "benchmarks/access_overhead.py", "--repository", str(reference_repository),
           "--requests", "10", "--json", str(out_json)]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300).stdout
    results = json.loads(out_json.read_text())
    assert len(results) == 8 and all(r["n"] == 10 for r in results.values())
    assert "| infer token over TLS | ModelInfer |" in out


def test_soak_benchmark_checks_answers_and_samples_memory(reference_repository: Path, tmp_path: Path):
    out_json = tmp_path / "soak.json"
    cmd = [sys.executable, "benchmarks/soak.py", "--repository", str(reference_repository),
           "--requests", "240", "--clients", "4", "--sample", "80", "--json", str(out_json)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out_json.read_text())
    assert result["errors"] == {} and result["wrong_answers"] == {}
    assert len(result["kinds"]) == 6
    assert [n for n, _ in result["rss_mb"]] == [0, 80, 160, 240, 240]  # a sample every 80, and the last
