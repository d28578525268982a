#!/usr/bin/env bash
# End-to-end figures of the write path on one release node, with EXTRA more zones (each with
# a geo_nearest service) beside the shipped example: PATCH latency (median and p90 of 200),
# CPU per write, how long after its 200 a drain shows in DNS, data_dir growth over 1,000
# writes, a small zone's PUT (latency and CPU), restart to /healthz 200, and idle CPU with
# three TCP health checks a second (IDLE_SECONDS, default 30).
#
#   benches/control/run.sh [EXTRA]        # default 10000; run it with 0 for the baseline
set -euo pipefail
cd "$(dirname "$0")/../.."
extra="${1:-10000}"
exe="$(cargo build --release --quiet --bin meridian --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[ -x "$exe" ] || exe="${CARGO_TARGET_DIR:-target}/release/meridian"
work="$(mktemp -d)"
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$work/zones"
cp zones/* "$work/zones/"
python3 - "$work/zones" "$extra" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
zone = "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\nstatic IN A 192.0.2.2\n"
with open(f"{d}/services.toml", "a") as svcs:
    for i in range(n):
        open(f"{d}/zone{i}.example.zone", "w").write(zone)
        svcs.write(f'\n[[service]]\nzone = "zone{i}.example"\nname = "www"\npolicy = "geo_nearest"\ndatacenters = ["lon", "iad", "sin"]\n')
PY
cat >"$work/node.toml" <<CONF
node_id = 1
data_dir = "data"
[dns]
listen = ["127.0.0.1:21053"]
[admin]
listen = "127.0.0.1:28053"
token = "bench"
[raft]
listen = "127.0.0.1:29053"
peers = { "1" = "127.0.0.1:29053" }
[geoip]
database = "$PWD/geoip/GeoIP2-City-Test.mmdb"
[bootstrap]
dir = "zones"
CONF
start() {
  local t0
  t0=$(date +%s%N)
  "$exe" serve --config "$work/node.toml" 2>>"$work/node.log" &
  pid=$!
  for _ in $(seq 1 2400); do
    curl -fs http://127.0.0.1:28053/healthz >/dev/null 2>&1 && break
    sleep 0.05
  done
  ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
patch() {
  curl -s -o /dev/null -w '%{time_total}\n' -X PATCH -H 'Authorization: Bearer bench' \
    -H 'Content-Type: application/json' -d "$1" http://127.0.0.1:28053/api/v1/datacenters/lon
}
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
start
echo "zones: $((extra + 1)); first start (import) to /healthz 200: ${ready_ms} ms"
size0="$(du -sb "$work/data" | cut -f1)"
c0="$(cpu)"
for i in $(seq 1 200); do patch "{\"weight\": $((i % 500 + 1))}"; done | sort -n >"$work/lat"
c1="$(cpu)"
ticks="$(getconf CLK_TCK)"
echo "PATCH latency (200): median $(sed -n 100p "$work/lat") s, p90 $(sed -n 180p "$work/lat") s"
echo "CPU per write: $(python3 -c "print(round(($c1 - $c0) / $ticks / 200 * 1000, 2))") ms"
# A drain, then how long until DNS answers without London (the London client's answer).
before="$(dig @127.0.0.1 -p 21053 +short +subnet=81.2.69.142/32 www.example.com A)"
patch '{"state": "drained"}' >/dev/null
t0=$(date +%s%N)
for _ in $(seq 1 500); do
  now="$(dig @127.0.0.1 -p 21053 +short +subnet=81.2.69.142/32 www.example.com A)"
  [ "$now" != "$before" ] && break
done
echo "drain visible in DNS $(( ($(date +%s%N) - t0) / 1000000 )) ms after its 200 (dig's own start included)"
patch '{"state": "active"}' >/dev/null
for i in $(seq 1 1000); do patch "{\"weight\": $((i % 500 + 1))}" >/dev/null; done
size1="$(du -sb "$work/data" | cut -f1)"
echo "data_dir: ${size0} bytes after the import, ${size1} after 1,200 more writes ($(python3 -c "print(round($size1 / $size0, 2))")x)"
# A PUT of one small zone (the zone's text and index only, whatever else the node holds).
put_zone() {
  printf '$TTL 300\n@ IN SOA ns1 hostmaster %d 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n' "$1" |
    curl -s -o /dev/null -w '%{time_total}\n' -X PUT -H 'Authorization: Bearer bench' \
      -H 'Content-Type: text/dns' --data-binary @- http://127.0.0.1:28053/api/v1/zones/small.example
}
c0="$(cpu)"
for i in $(seq 1 200); do put_zone "$i"; done | sort -n >"$work/zlat"
c1="$(cpu)"
echo "zone PUT latency (200): median $(sed -n 100p "$work/zlat") s, p90 $(sed -n 180p "$work/zlat") s; CPU per PUT $(python3 -c "print(round(($c1 - $c0) / $ticks / 200 * 1000, 2))") ms"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
start
echo "restart to /healthz 200: ${ready_ms} ms"
# Idle: the three sites health-checked over TCP each second (a loopback listener that
# accepts), then the node's CPU over IDLE_SECONDS with nothing else to do.
python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 29998)); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
' &
listener=$!
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; kill "$listener" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for dc in lon:51.5074:-0.1278:198.51.100.1 iad:38.9519:-77.448:198.51.100.2 sin:1.3521:103.8198:198.51.100.3; do
  IFS=: read -r id lat lon addr <<<"$dc"
  curl -fs -o /dev/null -X PUT -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d "{\"location\": {\"lat\": $lat, \"lon\": $lon}, \"addresses\": [\"$addr\"], \"weight\": 100, \"health_check\": {\"kind\": \"tcp\", \"address\": \"127.0.0.1:29998\", \"interval\": \"1s\", \"timeout\": \"500ms\"}}" \
    "http://127.0.0.1:28053/api/v1/datacenters/$id"
done
sleep 5 # the first verdicts
idle="${IDLE_SECONDS:-30}"
c0="$(cpu)"; sleep "$idle"; c1="$(cpu)"
echo "idle CPU with 3 TCP-checked sites (1 s): $(python3 -c "print(round(($c1 - $c0) / $ticks / $idle * 100, 2))")% of one CPU over ${idle} s"
