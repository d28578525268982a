#!/usr/bin/python3
"""Helpers for benches/load/run.sh (Debian's python3 + python3-maxminddb).

  gen    DB OUTDIR [--subnets N] [--seed S]   query files and verification subnets
  stats  DNSPERF_OUTPUT                       one TSV line: sent completed lost qps mean_ms p99_ms
  many   BOOTSTRAP_DIR N                      N more zones, each with a geo service (meridian-10k)
  peak   RESULTS_TSV SERVER WORKLOAD          median QPS of the full-load runs
  table  RESULTS_TSV                          the medians table, and the paced (80%) table
"""
import math
import random
import re
import statistics
import struct
import sys

# The three datacenters, the same in every server's config (configs/datacenters.toml).
DCS = [("lon", 51.5074, -0.1278, "198.51.100.1"),
       ("iad", 38.9519, -77.4480, "198.51.100.2"),
       ("sin", 1.3521, 103.8198, "198.51.100.3")]
ZONE = "example.com"


def nearest(lat, lon):
    """Haversine, ties to the first listed datacenter (as Meridian and the LUA record do)."""
    best, bh = None, math.inf
    for name, dlat, dlon, addr in DCS:
        p1, p2 = math.radians(lat), math.radians(dlat)
        h = (math.sin((p2 - p1) / 2) ** 2
             + math.cos(p1) * math.cos(p2) * math.sin(math.radians(dlon - lon) / 2) ** 2)
        if h < bh:
            best, bh = (name, addr), h
    return best


def qname_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(name, qtype=1, ecs=None, do=False):
    """A wire query: RD=0 (as a resolver asks an authoritative), EDNS0 with a 1232-byte
    buffer, optionally an ECS option (IPv4 address string, source prefix) and the DO bit."""
    opts = b""
    if ecs:
        addr, plen = ecs
        raw = bytes(int(x) for x in addr.split("."))[: (plen + 7) // 8]
        body = struct.pack("!HBB", 1, plen, 0) + raw
        opts = struct.pack("!HH", 8, len(body)) + body
    msg = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 1) + qname_wire(name) + struct.pack("!HH", qtype, 1)
    msg += b"\0" + struct.pack("!HHIH", 41, 1232, 0x8000 if do else 0, len(opts)) + opts
    return msg


def write_stream(path, msgs):
    """dnsperf -B input: each message preceded by its 2-byte length (TCP framing)."""
    with open(path, "wb") as f:
        for m in msgs:
            f.write(struct.pack("!H", len(m)) + m)


def gen(args):
    import maxminddb
    db, outdir = args[0], args[1]
    n = int(opt(args, "--subnets", "1000"))
    rng = random.Random(int(opt(args, "--seed", "1")))
    reader = maxminddb.open_database(db)
    subnets, seen, tries = [], set(), 0
    # Draw addresses uniformly from the unicast IPv4 space and keep the /24s whose
    # network has coordinates in the database: client subnets of real, located networks.
    while len(subnets) < n and tries < 200 * n:
        tries += 1
        a = rng.randrange(1 << 8, 224 << 24) & ~0xFF
        if a >> 24 in (0, 10, 100, 127, 169, 172, 192, 198):
            continue
        ip = "%d.%d.%d.%d" % (a >> 24, a >> 16 & 255, a >> 8 & 255, 0)
        if ip in seen:
            continue
        rec = reader.get(ip)
        loc = (rec or {}).get("location") or {}
        if "latitude" not in loc or "longitude" not in loc:
            continue
        seen.add(ip)
        dc = nearest(loc["latitude"], loc["longitude"])
        cc = ((rec.get("country") or rec.get("registered_country") or {}).get("iso_code")) or "--"
        subnets.append((ip, loc["latitude"], loc["longitude"], cc, dc[0], dc[1]))
    if len(subnets) < n:
        sys.exit("gen: found only %d located /24s" % len(subnets))
    with open(outdir + "/subnets.tsv", "w") as f:
        f.write("# subnet\tlat\tlon\tcountry\tnearest\taddress (haversine from the database's coordinates)\n")
        for s in subnets:
            f.write("%s/24\t%s\t%s\t%s\t%s\t%s\n" % s)
    # A dozen for the side-by-side check: four whose nearest is each datacenter.
    verify = []
    for name, *_ in DCS:
        verify += [s for s in subnets if s[4] == name][:4]
    with open(outdir + "/verify-subnets.txt", "w") as f:
        for s in verify:
            f.write("%s/24 %s %s %s\n" % (s[0], s[3], s[4], s[5]))
    write_stream(outdir + "/static.bin", [query("static." + ZONE)])
    write_stream(outdir + "/geo-ecs.bin", [query("www." + ZONE, ecs=(s[0], 24)) for s in subnets])
    write_stream(outdir + "/geo-noecs.bin", [query("www." + ZONE)])
    # Distinct random names, as in a random-subdomain flood: a packet cache cannot help much.
    labels = {"nx-%08x" % rng.getrandbits(32) for _ in range(100000)}
    write_stream(outdir + "/nxdomain.bin", [query(l + "." + ZONE) for l in sorted(labels)])
    # The DNSSEC rows: the same questions with DO (signed zones, -sec servers).
    write_stream(outdir + "/static-do.bin", [query("static." + ZONE, do=True)])
    write_stream(outdir + "/geo-do.bin", [query("www." + ZONE, ecs=(s[0], 24), do=True) for s in subnets])
    write_stream(outdir + "/nx-do.bin", [query(l + "." + ZONE, do=True) for l in sorted(labels)])
    per_dc = {d[0]: sum(1 for s in subnets if s[4] == d[0]) for d in DCS}
    print("gen: %d client /24s (%s), %d NXDOMAIN names" % (
        len(subnets), ", ".join("%s %d" % kv for kv in per_dc.items()), len(labels)))


def many(args):
    """N zones z00001.example.net ... with a few records and one geo_nearest service each,
    added to a Meridian bootstrap directory: the same queries then run against 1 and
    against N + 1 zones and services."""
    boot, n = args[0], int(args[1])
    with open(boot + "/services.toml", "a") as svc:
        for i in range(1, n + 1):
            origin = "z%05d.example.net" % i
            with open("%s/%s.zone" % (boot, origin), "w") as f:
                f.write("$TTL 300\n"
                        "@ 3600 IN SOA ns1.%s. hostmaster.%s. 1 7200 3600 1209600 300\n"
                        "@ IN NS ns1.%s.\n"
                        "ns1 IN A 127.0.0.1\n"
                        "static IN A 192.0.2.%d\n"
                        "mail IN MX 10 ns1.%s.\n" % (origin, origin, origin, i % 250 + 1, origin))
            svc.write('\n[[service]]\nzone = "%s"\nname = "www"\npolicy = "geo_nearest"\n'
                      'datacenters = ["%s", "%s", "%s"]\nttl = 60\n'
                      % ((origin,) + tuple(d[0] for d in DCS[i % 3:] + DCS[:i % 3])))


def read_results(path):
    cols, rows = None, {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if cols is None:
                cols = parts
                continue
            r = dict(zip(cols, parts))
            rows.setdefault((r["server"], r["workload"], r["round"] == "p80"), []).append(r)
    return rows


def median_of(rows, key, field):
    vals = [float(r[field]) for r in rows.get(key, []) if r.get(field, "") not in ("", "nan")]
    return statistics.median(vals) if vals else float("nan")


def peak(args):
    q = median_of(read_results(args[0]), (args[1], args[2], False), "qps")
    print("0" if math.isnan(q) else "%.0f" % q)


def opt(args, name, default):
    return args[args.index(name) + 1] if name in args else default


def stats(args):
    """Parse a `dnsperf -v` output: the summary, and p99 from the per-answer latencies."""
    lat, summary = [], {}
    with open(args[0], errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                try:
                    lat.append(float(line.rsplit(None, 1)[1]))
                except ValueError:
                    pass
                continue
            m = re.match(r"\s*(Queries sent|Queries completed|Queries lost|Queries per second|Average Latency \(s\)):\s+([0-9.]+)", line)
            if m:
                summary[m.group(1)] = float(m.group(2))
    if "Queries per second" not in summary:
        sys.exit("stats: no dnsperf summary in " + args[0])
    p99 = "nan"
    if lat:
        lat.sort()
        p99 = "%.3f" % (lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] * 1000)
    print("%d\t%d\t%d\t%.0f\t%.3f\t%s" % (
        summary.get("Queries sent", 0), summary.get("Queries completed", 0),
        summary.get("Queries lost", 0), summary["Queries per second"],
        summary.get("Average Latency (s)", float("nan")) * 1000, p99))


WORKLOADS = ["static", "geo-ecs", "geo-noecs", "nxdomain", "static-do", "geo-do", "nx-do"]


def reference(w):
    """The Meridian row a workload is compared with: the signed instance for DO rows."""
    return "meridian-sec" if w.endswith("-do") else "meridian"


# A DO row and the unsigned row of the same question (the cost of signing).
UNSIGNED = {"static-do": "static", "geo-do": "geo-ecs", "nx-do": "nxdomain"}


def table(args):
    rows = read_results(args[0])
    order = []
    for key in rows:
        if key[0] not in order:
            order.append(key[0])

    def med(key, field):
        return median_of(rows, key, field)

    def fmt(v, spec):
        return "-" if math.isnan(v) else format(v, spec)

    def ratio(m, v):
        return fmt(m / v, ".2f") if v > 0 and not math.isnan(m) else "-"

    def show(out):
        widths = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
        for i, r in enumerate(out):
            print("  ".join(c.rjust(widths[j]) if j >= 2 else c.ljust(widths[j]) for j, c in enumerate(r)))
            if i == 0:
                print("  ".join("-" * w for w in widths))

    def label(key):
        ok = all(r.get("verified", "yes") == "yes" for r in rows[key])
        return key[0] + ("" if ok else " (!)")

    def present(paced):
        """(key, median of field, lost %) of every server and workload run in this mode."""
        for server in order:
            for w in WORKLOADS:
                key = (server, w, paced)
                if key in rows:
                    sent, lost = med(key, "sent"), med(key, "lost")
                    yield key, (lambda f, k=key: med(k, f)), fmt(100 * lost / sent if sent else float("nan"), ".2f")

    # The other rows against Meridian's: its peers, and its own variants (meridian-10k:
    # flat cost in the number of zones means a CPU ratio near 1).
    out = [["server", "workload", "runs", "QPS", "mean ms", "p99 ms", "CPU us/q", "CPU %", "RSS MiB",
            "lost %", "thr", "M/peer QPS", "M/peer CPU"]]
    for key, m, lost in present(False):
        server, w, _ = key
        qps, cpu = m("qps"), m("cpu_us_per_q")
        ref = reference(w)
        mq, mc = med((ref, w, False), "qps"), med((ref, w, False), "cpu_us_per_q")
        other = server != ref
        out.append([label(key), w, str(len(rows[key])), fmt(qps, ",.0f"), fmt(m("mean_ms"), ".3f"),
                    fmt(m("p99_ms"), ".3f"), fmt(cpu, ".2f"), fmt(m("cpu_pct"), ".0f"),
                    fmt(m("rss_kib") / 1024, ".1f"), lost, rows[key][-1]["threads"],
                    ratio(mq, qps) if other else "-", ratio(mc, cpu) if other else "-"])
    show(out)
    sig = signed(rows, med, fmt)
    if len(sig) > 1:
        print()
        print("DNSSEC (DO rows): Meridian signed vs its unsigned answer to the same question, and vs the signed peers")
        show(sig)
    paced = [k for k in rows if k[2]]
    if not paced:
        return
    print()
    print("paced at 80% of each server's own peak (dnsperf -Q, the peak = that server's median QPS above)")
    out = [["server", "workload", "runs", "target QPS", "QPS", "mean ms", "p99 ms", "CPU us/q", "lost %",
            "M/peer p99"]]
    for key, m, lost in present(True):
        server, w, _ = key
        p99, mp = m("p99_ms"), med((reference(w), w, True), "p99_ms")
        out.append([label(key), w, str(len(rows[key])), fmt(m("target_qps"), ",.0f"), fmt(m("qps"), ",.0f"),
                    fmt(m("mean_ms"), ".3f"), fmt(p99, ".3f"), fmt(m("cpu_us_per_q"), ".2f"), lost,
                    ratio(mp, p99) if server != reference(w) else "-"])
    show(out)


def signed(rows, med, fmt):
    """DNSSEC: Meridian's signed CPU per query against its unsigned answer to the same
    question and against the signed peers (the targets of issue 13)."""
    out = [["workload", "M signed us/q", "M unsigned us/q", "signed/unsigned", "knot-sec us/q",
            "M/knot-sec", "pdns-sec us/q", "M/pdns-sec"]]
    for w, plain in UNSIGNED.items():
        m = med(("meridian-sec", w, False), "cpu_us_per_q")
        if math.isnan(m):
            continue
        u = med(("meridian", plain, False), "cpu_us_per_q")
        k = med(("knot-sec", w, False), "cpu_us_per_q")
        p = med(("pdns-sec", w, False), "cpu_us_per_q")
        r = lambda a, b: fmt(a / b, ".2f") if b > 0 and not math.isnan(a) and not math.isnan(b) else "-"
        out.append([w, fmt(m, ".2f"), fmt(u, ".2f"), r(m, u), fmt(k, ".2f"), r(m, k), fmt(p, ".2f"), r(m, p)])
    return out


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"gen": gen, "stats": stats, "table": table, "many": many, "peak": peak}[cmd](rest)
