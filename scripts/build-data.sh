#!/usr/bin/env bash
# Build the debian-docs corpus (data/debian-docs.jsonl) from the apt lists with English long
# descriptions: needed to train and evaluate debian-han, not to export or serve it (export
# validation falls back to the committed models/data/debian-docs-heldout.jsonl). Needs root for
# apt-get when the Translation-en lists are missing; dates and sorting are generated in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f data/debian-docs.jsonl ]; then
  attnserve data --out data
fi
