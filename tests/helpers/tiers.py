"""The test tiers: which fixtures put a test in which tier, and each tier's timeout.

- unit: none of the fixtures below. Fake models, in-memory parts: the whole tier runs in under a
  minute (`python3 -m pytest -m unit`, the fast loop).
- integration: the reference repository, the server in this process on port 0 (over it), or a
  model trained and exported in the test session (real torch, ONNX export, ONNX Runtime).
- system: processes: servers started as `attnserve serve`, signals, replicas, HAProxy, Prometheus.
- packaging: images, third-party distributions pip-installed, the deployment tools.

A test that needs one of these must use its fixture (directly or through another fixture), or it
lands in the unit tier and gets the unit timeout. A test whose cost lies in its own body (it trains,
exports or runs a tool itself) declares its tier: `@pytest.mark.integration`, or `pytestmark` for a
whole module; a test never declares a tier lower than its fixtures give it.
"""

from __future__ import annotations

from collections.abc import Iterable

# tier -> the fixtures that put a test in it; the highest tier any of a test's fixtures names wins
TIERS: dict[str, frozenset[str]] = {
    "unit": frozenset(),
    "integration": frozenset(
        {"reference_repository", "server", "debian_corpus", "tiny_checkpoints", "tiny_checkpoint", "model_dir"}
    ),
    "system": frozenset({"processes", "prometheus_binary", "haproxy"}),
    "packaging": frozenset({"image_prefix", "echo_site", "rendered"}),
}
TIMEOUTS = {"unit": 60, "integration": 600, "system": 600, "packaging": 2400}  # seconds per test (setup to teardown)


def tier_of(fixturenames: Iterable[str], marks: Iterable[str] = ()) -> str:
    """The tier of a test whose fixture closure is `fixturenames`: the highest its fixtures name, or
    a higher one the test declares among its `marks` (a test whose cost is in its own body)."""
    used, declared = set(fixturenames), set(marks)
    return [tier for tier, names in TIERS.items() if not names or names & used or tier in declared][-1]
