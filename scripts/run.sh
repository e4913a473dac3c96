#!/usr/bin/env bash
# The main job, from a fresh machine: install, build the data, and report the held-out
# figures of the committed reference checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build-data.sh
attnserve evaluate --all
