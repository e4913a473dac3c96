"""benchmarks/hostile.py runs end to end (one run of each case, a small flood) and records the
answers it measured. No timing is asserted: speed and memory are read from its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT


def test_hostile_benchmark_records_every_case(reference_repository: Path, tmp_path: Path):
    out = tmp_path / "hostile.json"
    cmd = [sys.executable, "benchmarks/hostile.py", "--repository", str(reference_repository), "--runs", "1",
           "--connections", "30", "--requests", "5", "--json", str(out)]  # fmt: skip
    printed = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600).stdout
    r = json.loads(out.read_text())["this"]
    assert r["hostile_bytes_default_limit"]["code"] == "RESOURCE_EXHAUSTED"
    assert r["hostile_bytes_raised_limit"]["code"] == "INVALID_ARGUMENT"
    assert "batch 8700000, over max_batch_size 64" in r["hostile_bytes_raised_limit"]["details"]
    assert r["one_50mb_text_raised_limit"]["code"] == "INVALID_ARGUMENT"
    assert r["int64_unknown_model_raised_limit"]["code"] == "NOT_FOUND"
    flood = r["metrics_flood"]
    assert flood["connections_opened"] == 30
    assert flood["threads_with_connections"] <= flood["threads_idle"] + 1  # no thread per connection
    assert r["undecodable"]["codes"] == {"INVALID_ARGUMENT": 2000} and r["undecodable"]["log_lines"] <= 10
    assert {a["code"] for a in r["escaping_overrides"]["answers"]} == {"INVALID_ARGUMENT"}
    assert "hostile_bytes_raised_limit: 52.2 MB -> INVALID_ARGUMENT" in printed
