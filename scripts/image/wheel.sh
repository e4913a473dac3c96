#!/usr/bin/env bash
# Image build stage: attnserve as a wheel in OUT (the serving stages install it, not the source tree).
# Usage (from the source root): bash scripts/image/wheel.sh OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$1"
rm -rf "$out"
"${PYTHON:-python3}" -m pip wheel --no-cache-dir --disable-pip-version-check -q --no-deps -w "$out" .
ls "$out"/attnserve-*.whl
