#!/usr/bin/env bash
# Debian's Prometheus (and promtool), for the monitoring tests and deploy/prometheus. Needs root.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Installing never runs `apt-get update` here: a plain update would delete the English
# translation lists scripts/build-data.sh reads; build-data.sh updates with them kept.
apt-get install -y -q --no-install-recommends prometheus >/dev/null || {
  apt-get update -q -o Acquire::Languages=en >/dev/null
  apt-get install -y -q --no-install-recommends prometheus >/dev/null
}
