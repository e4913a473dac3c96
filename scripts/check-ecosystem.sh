#!/usr/bin/env bash
# attnserve installs beside the ecosystem: ONE fresh venv holds attnserve's serving extras (serve,
# onnx-cpu, torch; train too, so that a fresh clone can build the model repository the tests serve)
# with tritonclient[grpc] and kserve, which cap protobuf<7; `pip check` is clean and the client
# tests pass in it (tests/serving/test_client.py, test_tritonclient.py, test_streaming.py, and
# test_protos.py, which checks the committed gencode on the wire against tritonclient's protobuf 6 classes).
#
#   bash scripts/check-ecosystem.sh [VENV]    # VENV: runs/ecosystem-venv by default, made anew
#   ECOSYSTEM="tritonclient[grpc] kserve mlserver" bash scripts/check-ecosystem.sh   # other packages
#
# Needs the package index (pip). Never pulls a CUDA torch: it refuses unless torch==2.13.0
# resolves to the CPU wheel (as scripts/install.sh's pin does on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-runs/ecosystem-venv}"
PYTHON="${PYTHON:-python3}"
ECOSYSTEM="${ECOSYSTEM:-tritonclient[grpc]==2.73.0 kserve==0.21.0}"
TORCH="torch==2.13.0"
PIP=(--disable-pip-version-check -q)

step() { printf '\n== %s\n' "$*"; }

step "fresh venv $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"

step "$TORCH, the CPU wheel only"
report="$VENV/torch-plan.json"
"$PY" -m pip install "${PIP[@]}" --dry-run --ignore-installed --report "$report" "$TORCH"
torch_version="$("$PY" -c 'import json, sys
plan = json.load(open(sys.argv[1]))["install"]
print(next(p["metadata"]["version"] for p in plan if p["metadata"]["name"] == "torch"))' "$report")"
if [[ "$torch_version" != *+cpu ]]; then
    echo "check-ecosystem: $TORCH resolves to $torch_version here, not the CPU wheel; refusing to pull it" \
        "(put the CPU wheel where pip finds it, e.g. PIP_FIND_LINKS)" >&2
    exit 1
fi
"$PY" -m pip install "${PIP[@]}" "torch==$torch_version"
# Every later resolution keeps exactly this torch.
echo "torch==$torch_version" > "$VENV/constraints.txt"

step "attnserve[serve,onnx-cpu,train] + $ECOSYSTEM"
# shellcheck disable=SC2086  # ECOSYSTEM is a list of requirements
"$PY" -m pip install "${PIP[@]}" -c "$VENV/constraints.txt" ".[serve,onnx-cpu,train]" $ECOSYSTEM \
    pytest "pytest-timeout==2.4.0" "hypothesis>=6" "packaging>=14.1"

step "pip check"
"$PY" -m pip check

step "versions"
"$PY" -m pip list 2>/dev/null | grep -iE '^(attnserve|protobuf|grpcio[a-z-]*|tritonclient|kserve|mlserver|onnx|onnxruntime|torch) '

step "the committed gencode loads on this protobuf without a warning"
"$PY" -W error - <<'PY'
import google.protobuf
from protocol.gen.attnserve.v1 import attention_pb2_grpc  # noqa: F401
from protocol.gen.inference import grpc_service_pb2_grpc, model_config_pb2  # noqa: F401
print("attnserve gencode on protobuf", google.protobuf.__version__, "- no warning")
PY
# Our descriptors live in a private pool, so the whole server imports beside either package's
# `inference.*` messages (which collide with each other in protobuf's default pool: kserve and
# tritonclient.grpc cannot share a process, with or without attnserve).
for other in tritonclient.grpc kserve; do
    if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${other%%.*}') is None)"; then
        "$PY" -c "import serving.app, $other; print('serving.app and $other import into one process')"
    fi
done

step "client tests"
"$PY" -m pytest -q -p no:cacheprovider tests/serving/test_client.py tests/serving/test_tritonclient.py \
    tests/serving/test_streaming.py tests/serving/test_protos.py
