"""benchmarks/grpc_intake.py runs end to end (one round, two loop costs) and writes its section.

No timing is asserted: how many calls the server sees depends on the machine, and is read from the
benchmark's own output, never tested.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT


@pytest.mark.integration  # runs the benchmark
def test_grpc_intake_benchmark_counts_the_handlers_that_ran(tmp_path: Path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n")
    cmd = [sys.executable, "benchmarks/grpc_intake.py", "--rounds", "1", "--work", "0", "1", "--markdown", str(doc)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
    text = doc.read_text()
    assert text.startswith("# Performance\n") and "<!-- grpc_intake -->" in text
    rows = re.findall(r"^\| ([\d.]+) \| (\d+) \| \[(\d+)\] \|$", text, re.MULTILINE)
    assert [ms for ms, _, _ in rows] == ["0", "1"]
    assert all(0 < int(median) <= 50 and median == only for _, median, only in rows), rows
