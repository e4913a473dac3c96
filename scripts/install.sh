#!/usr/bin/env bash
# Install attnserve and everything it needs on a fresh Debian machine (also used by the
# Dockerfile and .ci/run). Idempotent. EXTRAS picks the pip extras (default: dev).
# Installs into the interpreter's own environment where it may (an active venv, or root with a
# Python not marked EXTERNALLY-MANAGED); otherwise, e.g. as a non-root user, into .venv here
# (or $ATTNSERVE_VENV): scripts/env.sh puts that on PATH for the other scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev}"
# shellcheck source=scripts/env.sh
source scripts/env.sh
if ! attnserve_python_writable "$PYTHON"; then
    if [ ! -x "$ATTNSERVE_VENV/bin/python" ]; then
        echo "install: $("$PYTHON" -c 'import sys; print(sys.prefix)') is not writable here; installing into $ATTNSERVE_VENV"
        "$PYTHON" -m venv "$ATTNSERVE_VENV"
    fi
    PYTHON="$ATTNSERVE_VENV/bin/python"
fi

# torch==2.13.0 is pinned in pyproject.toml: it installs from the CPU wheel, never a CUDA build.
"$PYTHON" -m pip install --disable-pip-version-check -q -e ".[${EXTRAS}]"
