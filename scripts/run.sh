#!/usr/bin/env bash
# The main job, from a fresh machine: install, build the data and the reference model
# repository (skipped when up to date), then serve it over gRPC on :8001 and REST on :8000 (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build-data.sh
bash scripts/build-repository.sh model_repository
exec attnserve serve --repository model_repository "$@"
