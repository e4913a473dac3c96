"""`attnserve --version` prints the installed version, the one pyproject.toml declares."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from runtime.version import attnserve_version
from tests.helpers.paths import ROOT


def test_version_flag_prints_the_version() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "--version"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (run.returncode, run.stdout, run.stderr) == (0, f"attnserve {declared}\n", "")
    assert attnserve_version() == declared
