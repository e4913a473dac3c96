#!/usr/bin/env bash
# A fresh venv at VENV holding the given pip requirements, checked with `pip check`.
# Usage: bash scripts/image/venv.sh VENV REQUIREMENT...   (PYTHON: the interpreter, default python3)
# TORCH_INDEX: an extra package index for torch's CPU wheel ("" or unset: the pip config's indexes).
set -euo pipefail
venv="$1"
shift
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
index=()
if [ -n "${TORCH_INDEX:-}" ]; then index=(--extra-index-url "$TORCH_INDEX"); fi
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check -q "${index[@]}" "$@"
"$venv/bin/python" -m pip check
