"""benchmarks/decode_batching.py runs end to end (a short round of each mode), writes its JSON and its ratios.

No timing is asserted: speed is read from the benchmark's own output, never tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT


def test_decode_batching_benchmark_measures_every_mode(reference_repository: Path, tmp_path: Path):
    out = tmp_path / "decode_batching.json"
    cmd = [sys.executable, "benchmarks/decode_batching.py", "--repository", str(reference_repository),
           "--clients", "4", "--seconds", "0.3", "--rounds", "1", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    runs = {r["mode"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"request", "iteration@1", "iteration"}
    assert all(r["rps"] > 0 and r["cpu_ms"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] for r in runs.values())
    for mode in ("iteration@1", "iteration"):
        row = runs[mode]
        assert row["steps"] > 0 and row["mean_rows"] >= 1 and row["requests_per_admission"] >= 1
    assert "steps" not in runs["request"]
    # the ratios of every pair of modes close the output
    assert "rps iteration / iteration@1: median" in done.stdout and "p50_ms iteration / request: median" in done.stdout


def test_decode_batching_benchmark_runs_an_open_loop(reference_repository: Path, tmp_path: Path):
    out = tmp_path / "open.json"
    cmd = [sys.executable, "benchmarks/decode_batching.py", "--repository", str(reference_repository),
           "--rate", "200", "--seconds", "0.3", "--rounds", "1", "--modes", "request,iteration",
           "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    runs = {r["mode"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"request", "iteration"}
    # about 60 requests arrived (Poisson at 200/s for 0.3 s); one that failed would have failed the run
    assert all(r["rate"] == 200 and r["rps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] for r in runs.values())
