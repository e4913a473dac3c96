#!/usr/bin/env bash
# The main job, from a fresh machine, as any user: install, build the reference model repository
# from committed files only (skipped when up to date), then serve it over gRPC on :8001 and REST on
# :8000 (Ctrl-C to stop). Not root? install.sh installs into .venv, which scripts/env.sh puts on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
bash scripts/build-repository.sh model_repository
exec attnserve serve --repository model_repository "$@"
