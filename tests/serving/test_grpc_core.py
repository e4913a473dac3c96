"""gRPC core experiments: set for the server process before gRPC loads, never over an operator's choice."""

from __future__ import annotations

import subprocess
import sys

from serving.grpc.core import ENV, apply_experiments
from serving.settings import GrpcSettings
from tests.helpers.paths import ROOT

PROBE = """
import os, sys
from serving.grpc.core import apply_experiments
print(apply_experiments(sys.argv[1:]))
import grpc  # loads core with what was set
print(os.environ.get("GRPC_EXPERIMENTS"))
"""


def run(args: list[str], env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_sets_the_experiments_before_grpc_loads():
    assert run(["-event_engine_listener"], {"PATH": "/usr/bin:/bin"}) == ["-event_engine_listener"] * 2


def test_an_operators_grpc_experiments_wins():
    env = {"PATH": "/usr/bin:/bin", ENV: "-event_engine_client"}
    assert run(["-event_engine_listener"], env) == ["-event_engine_client"] * 2


def test_too_late_once_grpc_is_imported():
    import grpc  # noqa: F401  (this process has loaded gRPC core already)

    environ: dict[str, str] = {}
    assert apply_experiments(["-event_engine_listener"], environ) is None
    assert environ == {}


def test_default_setting_and_opt_out():
    assert GrpcSettings().core_experiments == ["-event_engine_listener"]
    assert GrpcSettings(core_experiments=[]).core_experiments == []
