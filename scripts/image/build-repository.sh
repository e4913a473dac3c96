#!/usr/bin/env bash
# Image build stage: the reference model repository from committed files only (checkpoints/ and the
# held-out sample models/data/debian-docs-heldout.jsonl; no apt lists, no corpus), exported and
# verified by the training stack installed into its own venv, which the stage leaves behind.
# Usage (from the source root): bash scripts/image/build-repository.sh BUILD_VENV OUT
# TORCH_INDEX: an extra package index for torch's CPU wheel ("" or unset: the pip config's indexes).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="$1" out="$2"
bash scripts/image/venv.sh "$venv" ".[train,onnx-cpu]"
PATH="$venv/bin:$PATH" bash scripts/build-repository.sh "$out"
test -f "$out/dates-additive/config.yaml"
echo "image: model repository in $out ($(find "$out" -name config.yaml | wc -l) models)"
