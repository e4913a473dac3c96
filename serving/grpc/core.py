"""gRPC core's process-wide knobs, which it reads once, when the `grpc` module first loads."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

ENV = "GRPC_EXPERIMENTS"


def apply_experiments(experiments: Sequence[str], environ: dict[str, str] | None = None) -> str | None:
    """Set GRPC_EXPERIMENTS for this process before gRPC loads; return the value gRPC will use.

    An operator's own GRPC_EXPERIMENTS wins. Returns None when `grpc` is already imported:
    core has read its experiments then, and changing the variable would only mislead.
    """
    env = os.environ if environ is None else environ
    if "grpc" in sys.modules:
        return None
    if ENV not in env and experiments:
        env[ENV] = ",".join(experiments)
    return env.get(ENV, "")
