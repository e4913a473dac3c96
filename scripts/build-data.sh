#!/usr/bin/env bash
# Build the debian-docs corpus (data/debian-docs.jsonl) from the apt lists with English
# long descriptions. Needs root for apt-get; dates and sorting are generated in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f data/debian-docs.jsonl ]; then
  attnserve data --out data
fi
