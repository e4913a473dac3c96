#!/usr/bin/env bash
# Image serving stage: a venv at VENV with the attnserve wheel from WHEELS and the given extras
# (slim: serve,onnx-cpu,tracing; torch: + torch; cuda: serve,onnx-cuda,tracing), then the checks
# that the environment is what the image promises: `attnserve --version` runs, and torch is
# importable exactly when the extras name it.
# Usage: bash install.sh VENV WHEELS EXTRAS   (TORCH_INDEX as in venv.sh)
set -euo pipefail
here="$(dirname "$0")"
venv="$1" wheels="$2" extras="$3"
wheel=$(ls "$wheels"/attnserve-*.whl)
bash "$here/venv.sh" "$venv" "$wheel[$extras]"
"$venv/bin/attnserve" --version
has_torch=$("$venv/bin/python" -c 'import importlib.util as u; print(u.find_spec("torch") is not None)')
case ",$extras," in
  *,torch,*) want=True ;;
  *) want=False ;;
esac
if [ "$has_torch" != "$want" ]; then
  echo "install: torch importable: $has_torch, but the extras '$extras' say $want" >&2
  exit 1
fi
