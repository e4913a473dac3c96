"""Where the checkout and the files the tests read are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"  # the reference repository scripts/build-repository.sh builds
FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE_DOCS = FIXTURES / "debian-docs-sample.jsonl"
K8S = ROOT / "deploy" / "k8s"
