#!/usr/bin/env bash
# Print the cache key of the reference model repository: a sha256 over everything that can change
# what `attnserve export --all` writes: the name and content of every file under checkpoints/,
# models/ (the model code and its export specs), exporters/, backends/ (they verify the graphs) and
# runtime/ (the contract layer), this script and scripts/build-repository.sh, the entry points of
# pyproject.toml (they name specs and backends), and the installed torch, onnx, onnxscript and
# onnxruntime versions. scripts/build-repository.sh rebuilds when the key differs from its stamp.
#
#   bash scripts/repository-key.sh [ROOT]    # ROOT: the checkout (default: this one)
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
PYTHON="${PYTHON:-python3}"
{
  find checkpoints models exporters backends runtime -type f \
    -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  sha256sum scripts/repository-key.sh scripts/build-repository.sh
  "$PYTHON" - <<'PY'
import json
import tomllib
from importlib import metadata

with open("pyproject.toml", "rb") as f:
    print(json.dumps(tomllib.load(f)["project"].get("entry-points", {}), sort_keys=True))
for dist in ("torch", "onnx", "onnxscript", "onnxruntime"):
    try:
        print(dist, metadata.version(dist))
    except metadata.PackageNotFoundError:
        print(dist, "absent")
PY
} | sha256sum | cut -d' ' -f1
