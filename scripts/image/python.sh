#!/usr/bin/env bash
# Image serving stage on a base image without Python (nvidia/cuda): the distribution's python3 and
# venv. A no-op where python3 can already make venvs (the python images, CI).
set -euo pipefail
if python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "python.sh: $(python3 --version) with venv is there"
  exit 0
fi
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv
rm -rf /var/lib/apt/lists/*
