# Sourced by scripts/install.sh and scripts/run.sh: which Python environment attnserve lives in.
# When the interpreter's own site-packages cannot take it (a non-root user, or a Debian Python
# marked EXTERNALLY-MANAGED without PIP_BREAK_SYSTEM_PACKAGES), install.sh makes the venv
# $ATTNSERVE_VENV (default: .venv in the checkout); sourcing this then puts it first on PATH.
PYTHON="${PYTHON:-python3}"
ATTNSERVE_VENV="${ATTNSERVE_VENV:-$(pwd)/.venv}"

# True when pip may install into this interpreter's environment.
attnserve_python_writable() {
    "$1" - <<'PY'
import os
import sys
import sysconfig

in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
managed = managed and os.environ.get("PIP_BREAK_SYSTEM_PACKAGES", "").lower() not in {"1", "true", "yes", "on"}
writable = all(os.access(sysconfig.get_path(k), os.W_OK) for k in ("purelib", "platlib", "scripts"))
sys.exit(0 if writable and (in_venv or not managed) else 1)
PY
}

if ! attnserve_python_writable "$PYTHON" && [ -x "$ATTNSERVE_VENV/bin/python" ]; then
    export PATH="$ATTNSERVE_VENV/bin:$PATH"
    PYTHON="$ATTNSERVE_VENV/bin/python"
fi
