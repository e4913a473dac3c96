"""The alert rules, run by promtool's rule unit tests (deploy/prometheus/rules.test.yml) on synthetic series."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers.paths import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert alerts and alerts <= tested


def test_alert_rules_fire_on_a_burst_only():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here (.ci/run installs Debian's prometheus package)")
    out = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
