#!/usr/bin/env bash
# Install attnserve and everything it needs on a fresh Debian machine (also used by the
# Dockerfile and .ci/run). Idempotent. EXTRAS picks the pip extras (default: dev).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev}"
PYTHON="${PYTHON:-python3}"

# torch==2.13.0 is pinned in pyproject.toml: it installs from the CPU wheel, never a CUDA build.
"$PYTHON" -m pip install --disable-pip-version-check -q -e ".[${EXTRAS}]"
