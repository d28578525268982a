#!/usr/bin/env bash
# benches/bigzone/run.sh — a 1,000,000-record zone (1,000,000 A + 100,000 CNAME) and 10,000
# small zones: load time and memory of Meridian beside Knot DNS, in the same run.
#
#   benches/bigzone/run.sh [--no-build] [--skip-knot] [--skip-cluster] [--skip-many]
#                          [--records N] [--cnames M] [--many K] [--nice N]
#                          [--only boot,knot,api,cluster,many,query]
#
# Servers run under `nice -n N` (default -10, as benches/load does): on a shared machine the
# wall times are otherwise mostly other people's work; the CPU times are shown beside them.
#
# Figures (one line each, also in $WORK/results.txt):
#   - bootstrap: process start to the last A and CNAME of the zone answered over DNS, and
#     the process's RSS then and its peak (VmHWM), for Meridian (zone in [bootstrap] dir)
#     and Knot (zone file in its config);
#   - api: a single node with a small bootstrap zone, PUT of the big zone (text/dns) to
#     /api/v1/zones: the PUT's time, then until DNS answers from it, RSS and peak;
#   - cluster: 3 nodes on loopback, the PUT sent to a follower; time until every node
#     answers from the zone, and the Raft term on every node before and after (an
#     election while the zone replicates shows as a higher term);
#   - many: K small zones (5 records each) in the bootstrap dir / Knot config: start to
#     the last zone answered, RSS and peak;
#   - query (with boot and/or knot): once the big zone answers, dnsperf sends random
#     existing names (A, and CNAME one time in four) for QUERY_SECONDS (8) with the server
#     on CPU 0 and dnsperf on CPU 1: the server's CPU time per answer.
# Installs what it needs and does not find, from Debian (scripts/apt-install.sh; a package's
# service is not started): dig (bind9-dnsutils), curl, python3, jq; knotd (knot) for knot;
# dnsperf and taskset (util-linux) for query. MERIDIAN_BIN=path runs another build of
# Meridian (e.g. an older one, for a before/after row) instead of this tree's.
# Loopback only; every process started here is stopped on exit (by pid).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
ONLY=boot,knot,api,cluster,many,query NICE=-10 BUILD=1 KNOT=1 CLUSTER=1 MANY_RUN=1 N=1000000 M=100000 K=10000 PORT_BASE=${PORT_BASE:-7400}
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --skip-knot) KNOT=0 ;;
    --skip-cluster) CLUSTER=0 ;;
    --skip-many) MANY_RUN=0 ;;
    --records) N=$2; shift ;;
    --cnames) M=$2; shift ;;
    --many) K=$2; shift ;;
    --nice) NICE=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
part() { [[ ",$ONLY," == *",$1,"* ]]; }
part knot || KNOT=0
part cluster || CLUSTER=0
part many || MANY_RUN=0
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have dig || need+=(bind9-dnsutils)
for tool in curl python3 jq; do have $tool || need+=($tool); done
[ "$KNOT" = 0 ] || have knotd || need+=(knot)
if part query; then
  have dnsperf || need+=(dnsperf)
  have taskset || need+=(util-linux)
fi
scripts/apt-install.sh ${need[@]+"${need[@]}"}
if [ "$BUILD" = 1 ]; then cargo build --release --quiet --bin meridian; fi
EXE=${MERIDIAN_BIN:-$REPO/target/release/meridian}
[ -x "$EXE" ] || { echo "run.sh: no $EXE" >&2; exit 1; }
KNOTD=$(command -v knotd || echo /usr/sbin/knotd)
WORK=${WORK:-$REPO/benches/bigzone/work}
rm -rf "$WORK"; mkdir -p "$WORK"
RESULTS=$WORK/results.txt
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
result() { echo "$*" | tee -a "$RESULTS"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ms() { awk -v t="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
stop() { kill -TERM "$1" 2>/dev/null || true; for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done; kill -KILL "$1" 2>/dev/null || true; }
# answers PORT NAME TYPE: the answer's first data line, empty when none.
answers() { dig @127.0.0.1 -p "$1" +norec +short +tries=1 +time=1 "$2" "$3" 2>/dev/null | grep -v '^;' | head -n 1; }
# wait_answers PID PORT LIMIT_S NAME TYPE [NAME TYPE...]: until every name answers (ms), or fail.
wait_answers() {
  local pid=$1 port=$2 limit=$3 t0; shift 3
  t0=$(now_ms)
  while :; do
    kill -0 "$pid" 2>/dev/null || { log "process $pid died"; return 1; }
    local all=1 i
    for ((i = 1; i <= $#; i += 2)); do
      local n=${!i} j=$((i + 1))
      [ -n "$(answers "$port" "$n" "${!j}")" ] || { all=0; break; }
    done
    [ "$all" = 1 ] && return 0
    [ $(( $(now_ms) - t0 )) -lt $((limit * 1000)) ] || { log "no answer within ${limit}s"; return 1; }
    sleep 0.05
  done
}

ORIGIN=big.example
LAST_A="h$((N - 1)).$ORIGIN" LAST_C="c$((M - 1)).$ORIGIN"
log "generating $N A + $M CNAME records and $K small zones"
mkdir -p "$WORK/big" "$WORK/many"
python3 benches/bigzone/genzone.py big "$ORIGIN" "$N" "$M" "$WORK/big/$ORIGIN.zone"
[ "$MANY_RUN" = 1 ] && python3 benches/bigzone/genzone.py many "$WORK/many" "$K"
result "zone: $N A + $M CNAME, $(($(stat -c %s "$WORK/big/$ORIGIN.zone") / 1048576)) MiB of text; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# meridian_conf DIR ID DNS ADMIN RAFT PEERS BOOTSTRAP_DIR
meridian_conf() {
  cat >"$1/node.toml" <<CONF
node_id = $2
data_dir = "$1/data"
[dns]
listen = ["127.0.0.1:$3"]
[admin]
listen = "127.0.0.1:$4"
token = "bench"
[raft]
listen = "127.0.0.1:$5"
peers = { $6 }
[geoip]
database = "$REPO/geoip/GeoIP2-City-Test.mmdb"
[bootstrap]
dir = "$7"
CONF
}
start_meridian() { # DIR -> pid in $MPID
  MERIDIAN_LOG=${MERIDIAN_LOG:-info} nice -n "$NICE" "$EXE" serve --config "$1/node.toml" >"$1/log" 2>&1 &
  MPID=$!; PIDS+=("$MPID")
}
wait_healthz() { # ADMIN_PORT LIMIT_S
  local t0; t0=$(now_ms)
  until curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1; do
    [ $(( $(now_ms) - t0 )) -lt $(($2 * 1000)) ] || return 1; sleep 0.05
  done
}
# loaded LABEL PID T0 PORT NAME TYPE [NAME TYPE...]: once every name answers (600 s at
# most), the result line: ms from T0, CPU, and RSS two seconds later and the peak; 1 if not.
loaded() {
  local label=$1 pid=$2 t0=$3 port=$4 t c; shift 4
  wait_answers "$pid" "$port" 600 "$@" || return 1
  t=$(( $(now_ms) - t0 )); c=$(cpu_ms "$pid"); sleep 2
  result "$label: ${t} ms to answer (CPU ${c} ms); RSS $(mib "$(rss_kb "$pid")") MiB, peak $(mib "$(hwm_kb "$pid")") MiB"
}
small_zone() { # DIR: the shipped example, for a node that must start with something
  mkdir -p "$1"; cp zones/example.com.zone zones/datacenters.toml zones/services.toml "$1/"
}
term_of() { curl -fs "http://127.0.0.1:$1/api/v1/cluster" | jq -r '.term // "?"'; }
# query NAME PID PORT: CPU per answer over the big zone, the server on CPU 0 and dnsperf on
# CPU 1 (part "query"; needs dnsperf): random existing names, three A per CNAME.
query() {
  part query || return 0
  command -v dnsperf >/dev/null || { result "$1 query: dnsperf is not installed"; return 0; }
  [ -s "$WORK/queries.txt" ] || python3 - "$N" "$M" "$ORIGIN" >"$WORK/queries.txt" <<'PY'
import random, sys
n, m, origin = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(7)
for i in range(200000):
    if i % 4 == 3:
        print(f"c{rnd.randrange(m)}.{origin} CNAME")
    else:
        print(f"h{rnd.randrange(n)}.{origin} A")
PY
  taskset -a -cp 0 "$2" >/dev/null 2>&1 || true
  local c0 out q c
  c0=$(cpu_ms "$2")
  out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$3" -d "$WORK/queries.txt" -l "${QUERY_SECONDS:-8}" -c 4 -q 200 2>&1)
  c=$(( $(cpu_ms "$2") - c0 ))
  q=$(echo "$out" | awk '/Queries completed:/ { print $3 }')
  if [ -n "$q" ] && [ "$q" -gt 0 ]; then
    result "$1 query: $q answers, $(echo "$out" | awk '/Queries per second:/ { print $4 }') per second, $(awk -v c="$c" -v q="$q" 'BEGIN { printf "%.2f", c * 1000 / q }') us CPU per answer"
  else result "$1 query: dnsperf failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; fi
}

# ------------------------------------------------------------------ bootstrap, 1 node
P=$PORT_BASE
if part boot; then
log "meridian: bootstrap from the zone file"
d=$WORK/m-boot; mkdir -p "$d/bootstrap"; ln -s "$WORK/big/$ORIGIN.zone" "$d/bootstrap/"
meridian_conf "$d" 1 $((P + 1)) $((P + 2)) $((P + 3)) "\"1\" = \"127.0.0.1:$((P + 3))\"" "$d/bootstrap"
t0=$(now_ms); start_meridian "$d"
if loaded "meridian bootstrap" "$MPID" "$t0" $((P + 1)) "$LAST_A" A "$LAST_C" CNAME; then
  query meridian "$MPID" $((P + 1))
else result "meridian bootstrap: FAILED (see $d/log)"; fi
stop "$MPID"
fi

# ------------------------------------------------------------------ knot
if [ "$KNOT" = 1 ]; then
  knot_run() { # NAME ZONES_DIR ZONE_LIST -> starts knotd, pid in KPID
    local d=$WORK/$1; mkdir -p "$d/db"
    { printf 'server:\n    rundir: "%s"\n    listen: 127.0.0.1@%s\nlog:\n  - target: stderr\n    any: warning\n' "$d" $((P + 9))
      printf 'database:\n    storage: "%s/db"\ntemplate:\n  - id: default\n    storage: "%s"\n    zonefile-sync: -1\n    journal-content: none\nzone:\n' "$d" "$2"
      local z; for z in $3; do printf '  - domain: %s\n    file: %s.zone\n' "$z" "$z"; done
    } >"$d/knot.conf"
    nice -n "$NICE" "$KNOTD" -c "$d/knot.conf" >"$d/log" 2>&1 &
    KPID=$!; PIDS+=("$KPID")
  }
  log "knot: the same zone"
  t0=$(now_ms); knot_run knot-big "$WORK/big" "$ORIGIN"
  if loaded "knot bootstrap" "$KPID" "$t0" $((P + 9)) "$LAST_A" A "$LAST_C" CNAME; then
    query knot "$KPID" $((P + 9))
  else result "knot bootstrap: FAILED (see $WORK/knot-big/log)"; fi
  stop "$KPID"
fi

# ------------------------------------------------------------------ API, 1 node
if part api; then
log "meridian: PUT through the admin API, one node"
d=$WORK/m-api; small_zone "$d/bootstrap"
meridian_conf "$d" 1 $((P + 1)) $((P + 2)) $((P + 3)) "\"1\" = \"127.0.0.1:$((P + 3))\"" "$d/bootstrap"
start_meridian "$d"
if wait_healthz $((P + 2)) 60; then
  base=$(rss_kb "$MPID"); c0=$(cpu_ms "$MPID"); t0=$(now_ms)
  code=$(curl -s -o "$d/put.out" -w '%{http_code}' --max-time 600 -X PUT -H 'Authorization: Bearer bench' \
    -H 'Content-Type: text/dns' --data-binary "@$WORK/big/$ORIGIN.zone" "http://127.0.0.1:$((P + 2))/api/v1/zones/$ORIGIN")
  tput=$(( $(now_ms) - t0 ))
  if [ "$code" = 201 ] && wait_answers "$MPID" $((P + 1)) 600 "$LAST_A" A "$LAST_C" CNAME; then
    t=$(( $(now_ms) - t0 )); c=$(( $(cpu_ms "$MPID") - c0 )); sleep 2
    result "meridian api: PUT $code in ${tput} ms, answering ${t} ms after the PUT began (CPU ${c} ms); RSS $(mib "$(rss_kb "$MPID")") MiB (before the PUT $(mib "$base")), peak $(mib "$(hwm_kb "$MPID")") MiB"
  else result "meridian api: FAILED (PUT $code: $(head -c 300 "$d/put.out"))"; fi
else result "meridian api: node not healthy"; fi
stop "$MPID"
fi

# ------------------------------------------------------------------ API, 3 nodes
if [ "$CLUSTER" = 1 ]; then
  log "meridian: PUT to a follower of a 3-node cluster"
  peers="\"1\" = \"127.0.0.1:$((P + 13))\", \"2\" = \"127.0.0.1:$((P + 23))\", \"3\" = \"127.0.0.1:$((P + 33))\""
  CPIDS=()
  for i in 1 2 3; do
    d=$WORK/c$i; small_zone "$d/bootstrap"
    meridian_conf "$d" $i $((P + 10 * i + 1)) $((P + 10 * i + 2)) $((P + 10 * i + 3)) "$peers" "$d/bootstrap"
    start_meridian "$d"; CPIDS+=("$MPID")
  done
  ok=1
  for i in 1 2 3; do wait_healthz $((P + 10 * i + 2)) 60 || ok=0; done
  # A settled leader: every node names the same leader and term for 2 s in a row.
  leader="" same=0
  for _ in $(seq 300); do
    seen="$(for i in 1 2 3; do curl -fs "http://127.0.0.1:$((P + 10 * i + 2))/api/v1/cluster" | jq -r '"\(.leader) \(.term)"'; done | sort -u)"
    if [ "$(echo "$seen" | wc -l)" = 1 ] && [ "${seen%% *}" != null ]; then same=$((same + 1)); else same=0; fi
    [ "$same" -ge 10 ] && { leader=${seen%% *}; break; }
    sleep 0.2
  done
  if [ "$ok" = 1 ] && [ -n "$leader" ]; then
    f=$(( leader % 3 + 1 ))
    before="$(term_of $((P + 12))) $(term_of $((P + 22))) $(term_of $((P + 32)))"
    t0=$(now_ms)
    code=$(curl -s -o "$WORK/c$f/put.out" -w '%{http_code}' --max-time 600 -X PUT -H 'Authorization: Bearer bench' \
      -H 'Content-Type: text/dns' --data-binary "@$WORK/big/$ORIGIN.zone" "http://127.0.0.1:$((P + 10 * f + 2))/api/v1/zones/$ORIGIN")
    tput=$(( $(now_ms) - t0 ))
    all=1
    for i in 1 2 3; do
      [ "$all" = 1 ] || break   # one node that never answers is enough to know
      wait_answers "${CPIDS[$((i - 1))]}" $((P + 10 * i + 1)) 300 "$LAST_A" A "$LAST_C" CNAME || all=0
    done
    t=$(( $(now_ms) - t0 ))
    after="$(term_of $((P + 12))) $(term_of $((P + 22))) $(term_of $((P + 32)))"
    rss=""; for p in "${CPIDS[@]}"; do rss+=" $(mib "$(rss_kb "$p")")/$(mib "$(hwm_kb "$p")")"; done
    result "meridian cluster: PUT to follower $f (leader $leader) $code in ${tput} ms$([ "$code" = 201 ] || echo " ($(tr '\n' ' ' < "$WORK/c$f/put.out" | head -c 200))"), all 3 answering: $([ $all = 1 ] && echo "${t} ms" || echo NO); terms before [$before] after [$after]; RSS/peak MiB:$rss"
    { grep -h -c "large AppendEntries in the background" "$WORK"/c?/log || true; } | paste -sd' ' | sed 's/^/  large AppendEntries sent in the background, per node: /' | tee -a "$RESULTS"
  else result "meridian cluster: did not form"; fi
  for p in "${CPIDS[@]}"; do stop "$p"; done
fi

# ------------------------------------------------------------------ many small zones
if [ "$MANY_RUN" = 1 ]; then
  log "meridian: $K small zones"
  d=$WORK/m-many; mkdir -p "$d"
  meridian_conf "$d" 1 $((P + 1)) $((P + 2)) $((P + 3)) "\"1\" = \"127.0.0.1:$((P + 3))\"" "$WORK/many"
  t0=$(now_ms); start_meridian "$d"
  last="www.zone$((K - 1)).example"
  loaded "meridian $K zones" "$MPID" "$t0" $((P + 1)) "$last" A || result "meridian $K zones: FAILED"
  stop "$MPID"
  if [ "$KNOT" = 1 ]; then
    t0=$(now_ms); knot_run knot-many "$WORK/many" "$(seq -f 'zone%g.example' 0 $((K - 1)))"
    loaded "knot $K zones" "$KPID" "$t0" $((P + 9)) "$last" A || result "knot $K zones: FAILED"
    stop "$KPID"
  fi
fi
log "results in $RESULTS"
