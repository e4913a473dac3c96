#!/usr/bin/env bash
# The repository stands alone: no tracked file may point a reader outside the clone. Fails (exit 1,
# listing file:line:text) on any of
#   - a path into the notes or design folders that sit beside a checkout, or those notes' file names
#     (their facts live in docs/: architecture.md, export-pitfalls.md, data.md);
#   - a reference to an issue tracker's number ("issue" followed by a number);
#   - an absolute path into a developer's machine: anything under /work, /root, /home or /Users.
# System paths the product uses (/opt/attnserve, /mnt/models, /var/lib/apt/lists, /tmp) are fine.
# Data and vendored or generated files are not prose and are skipped: the Debian descriptions
# (*.jsonl), checkpoints, the vendored CRD schemas and the generated gRPC code.
set -euo pipefail
cd "$(dirname "$0")/.."

pattern='(\.\./|/)shared/(notes|design)'
pattern+='|(onnx-export|serving-anchors|translation-corpus|reliability|ARCHITECTURE|BRIEF)\.md'
pattern+='|[Ii]ssue #?[0-9]+'
pattern+='|(^|[^A-Za-z0-9_.~-])/(work|root|home|Users)/'

rc=0
hits=$(git grep -nIE "$pattern" -- . \
  ':(exclude)*.jsonl' ':(exclude)checkpoints/' ':(exclude)deploy/k8s/schemas/' ':(exclude)protocol/gen/') || rc=$?
case $rc in
  0) echo "check-references: tracked files point outside the repository (write the fact, or link a file in it):" >&2
     echo "$hits" >&2
     exit 1 ;;
  1) echo "check-references: no reference outside the repository" ;;
  *) echo "check-references: git grep failed (exit $rc)" >&2
     exit "$rc" ;;
esac
