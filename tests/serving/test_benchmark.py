"""benchmarks/serve_latency.py runs end to end (a few requests, with a baseline server) and writes its tables.

No timing is asserted: speed is read from the benchmark's own output, never tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


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
