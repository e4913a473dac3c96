#!/usr/bin/env bash
# Build the corpora of the Debian tasks under data/ (dates and sorting are generated in memory):
# - debian-docs (data/debian-docs.jsonl) from the apt lists with English long descriptions: needed
#   to train and evaluate debian-han, not to export or serve it (export validation falls back to the
#   committed models/data/debian-docs-heldout.jsonl). Needs root for apt-get when the Translation-en
#   lists are missing.
# - the en-de translation corpus (data/translations-de.jsonl) for debian-translate, fetched into a
#   private lists folder (any user). Optional: without Debian's mirrors the tests that need the full
#   held-out set skip, saying why (export validation uses models/data/translations-de-heldout.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f data/debian-docs.jsonl ]; then
  attnserve data --out data
fi
if [ ! -f data/translations-de.jsonl ]; then
  attnserve data translations --lang de --out data ||
    echo "the translation corpus could not be fetched; tests that need it will skip"
fi
