"""benchmarks/decode_batching.py runs end to end (a short round of each mode) and writes its JSON.

No timing is asserted: speed is read from the benchmark's own output, never tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_decode_batching_benchmark_measures_both_modes(reference_repository: Path, tmp_path: Path):
    out = tmp_path / "decode_batching.json"
    cmd = [sys.executable, "benchmarks/decode_batching.py", "--repository", str(reference_repository),
           "--clients", "4", "--seconds", "0.3", "--rounds", "1", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    runs = {r["mode"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"request", "iteration"}
    assert all(r["rps"] > 0 and r["cpu_ms"] > 0 for r in runs.values())
    iteration = runs["iteration"]
    assert iteration["steps"] > 0 and iteration["mean_rows"] >= 1 and iteration["requests_per_admission"] >= 1
    assert "steps" not in runs["request"]
