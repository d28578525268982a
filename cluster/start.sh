#!/usr/bin/env bash
# Start the example 3-node cluster on loopback (DNS 1053-1055, admin 8053-8055, Raft 9053-9055).
# Logs go to cluster/data/nodeN.log; stop it with: cluster/start.sh stop
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
mkdir -p cluster/data

if [ "${1:-}" = "stop" ]; then
  for n in 1 2 3; do
    pidfile="cluster/data/node$n.pid"
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  exit 0
fi

cargo build --release --quiet
# Certificates for Raft mTLS and the HTTPS admin API (kept across runs; the CA is reused).
[ -f cluster/certs/ca.crt ] || ./target/release/meridian certs --dir cluster/certs --nodes 3 >/dev/null
for n in 1 2 3; do
  ./target/release/meridian serve --config "cluster/node$n.toml" >"cluster/data/node$n.log" 2>&1 &
  echo $! >"cluster/data/node$n.pid"
done
for n in 1 2 3; do
  port=$((8052 + n))
  for _ in $(seq 1 100); do
    curl -fs --cacert cluster/certs/ca.crt "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "node $n: $(curl -s --cacert cluster/certs/ca.crt "https://127.0.0.1:$port/healthz" || echo 'not ready')"
done
curl -s --cacert cluster/certs/ca.crt https://127.0.0.1:8053/api/v1/cluster; echo
