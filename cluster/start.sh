#!/usr/bin/env bash
# The example 3-node cluster on loopback (DNS 1053-1055, admin 8053-8055, Raft 9053-9055).
#
#   cluster/start.sh               build, start the three nodes, wait for /healthz
#   cluster/start.sh start 2       start node 2 only (e.g. after stopping it)
#   cluster/start.sh stop 2        stop node 2 (SIGTERM, waits for it to exit)
#   cluster/start.sh stop          stop every node
#   cluster/start.sh status        which nodes run
#
# Logs go to cluster/data/nodeN.log (appended: a restart keeps the earlier lines), pid
# files to cluster/data/nodeN.pid. A node that already runs is never started twice, and
# its log and pid file are left alone. The binary is built with cargo and found where cargo
# puts it (CARGO_TARGET_DIR and cargo's config are honoured).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
data=cluster/data
all=(1 2 3)

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The pid of node N if it runs (its pid file names a live meridian process), else nothing.
running_pid() {
  local pidfile="$data/node$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  # Alive, and still that node (not a recycled pid).
  if kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "serve --config cluster/node$1.toml"; then
    echo "$pid"
  fi
}

# The nodes named on the command line (checked beforehand by `check_nodes`), or all.
nodes_from() {
  if [ $# -eq 0 ]; then echo "${all[@]}"; else echo "$@"; fi
}

check_nodes() {
  local n
  for n in "$@"; do
    case "$n" in 1 | 2 | 3) ;; *) echo "no node $n (nodes are 1, 2, 3)" >&2; exit 2 ;; esac
  done
}

stop_nodes() {
  local n pid
  for n in $(nodes_from "$@"); do
    pid="$(running_pid "$n")"
    if [ -z "$pid" ]; then
      echo "node $n: not running"
      rm -f "$data/node$n.pid"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    # SIGTERM: the node drains and leaves within seconds; SIGKILL after 15 s.
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "node $n: still running after 15 s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$data/node$n.pid"
    echo "node $n: stopped"
  done
}

# Build and print the path of the meridian binary.
build() {
  local exe
  exe="$(cargo build --release --quiet --bin meridian --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
  if [ -z "$exe" ]; then
    exe="${CARGO_TARGET_DIR:-target}/release/meridian"
  fi
  [ -x "$exe" ] || { echo "meridian binary not found at $exe" >&2; exit 1; }
  echo "$exe"
}

start_nodes() {
  local nodes n pid busy=()
  nodes="$(nodes_from "$@")"
  for n in $nodes; do
    pid="$(running_pid "$n")"
    [ -z "$pid" ] || busy+=("node $n (pid $pid)")
  done
  if [ ${#busy[@]} -gt 0 ]; then
    echo "already running: ${busy[*]}" >&2
    echo "stop it first: cluster/start.sh stop${1:+ $*}" >&2
    exit 1
  fi
  mkdir -p "$data"
  local exe
  exe="$(build)"
  # Certificates for Raft mTLS and the HTTPS admin API (kept across runs; the CA is reused).
  [ -f cluster/certs/ca.crt ] || "$exe" certs --dir cluster/certs --nodes 3 >/dev/null
  for n in $nodes; do
    echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting node $n ($exe)" >>"$data/node$n.log"
    "$exe" serve --config "cluster/node$n.toml" >>"$data/node$n.log" 2>&1 &
    echo $! >"$data/node$n.pid"
  done
  local port state
  for n in $nodes; do
    port=$((8052 + n))
    state="not ready (see $data/node$n.log)"
    for _ in $(seq 1 100); do
      if [ -z "$(running_pid "$n")" ]; then
        state="exited (see $data/node$n.log)"
        rm -f "$data/node$n.pid"
        break
      fi
      if curl -fs --cacert cluster/certs/ca.crt "https://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
        state="ready"
        break
      fi
      sleep 0.1
    done
    echo "node $n: $state"
  done
  curl -s --cacert cluster/certs/ca.crt "https://127.0.0.1:$((8052 + ${nodes%% *}))/api/v1/cluster" || true
  echo
}

status() {
  local n pid
  for n in "${all[@]}"; do
    pid="$(running_pid "$n")"
    if [ -n "$pid" ]; then echo "node $n: running (pid $pid)"; else echo "node $n: stopped"; fi
  done
}

cmd="${1:-start}"
[ $# -eq 0 ] || shift
case "$cmd" in
  start) check_nodes "$@"; start_nodes "$@" ;;
  stop) check_nodes "$@"; stop_nodes "$@" ;;
  status) status ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
