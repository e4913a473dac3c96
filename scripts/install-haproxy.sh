#!/usr/bin/env bash
# Debian's HAProxy (2.6 on Debian 12), the L7 gRPC load balancer of deploy/haproxy and
# tests/serving/test_replicas.py. Needs root. The tests run the binary as a plain process on a
# loopback port; Debian's own service (started only where an init system runs) listens nowhere.
set -euo pipefail
if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# -o Acquire::Languages=en keeps the English translation lists scripts/build-data.sh reads
apt-get update -q -o Acquire::Languages=en >/dev/null
apt-get install -y -q --no-install-recommends haproxy >/dev/null
