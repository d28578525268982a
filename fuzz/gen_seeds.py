#!/usr/bin/env python3
"""Write the seed corpus for the `query` target into fuzz/seeds/ (one DNS query per file).

Run from anywhere: python3 fuzz/gen_seeds.py. The seeds are committed; rerun after editing.
"""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def name(text):
    out = b""
    for label in text.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def opt(udp=1232, version=0, do=False, options=b""):
    return (b"\x00" + struct.pack(">HHBBHH", 41, udp, 0, version, 0x8000 if do else 0,
                                  len(options)) + options)


def nsid():
    return struct.pack(">HH", 3, 0)


def ecs(family, prefix, addr):
    data = struct.pack(">HBB", family, prefix, 0) + addr[: (prefix + 7) // 8]
    return struct.pack(">HH", 8, len(data)) + data


def query(qname, qtype, extra=b"", arcount=0, qid=0x1234, flags=0x0100):
    return (struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount) + name(qname)
            + struct.pack(">HH", qtype, 1) + extra)


A, NS, CNAME, MX, TXT, AAAA, SRV, DS, ANY = 1, 2, 5, 15, 16, 28, 33, 43, 255
long_name = ".".join(["a" * 63] * 3 + ["b" * 50, "big", "test"])
SEEDS = {
    "a-static": query("static.example.com", A),
    "a-opt-ecs-nsid": query("StAtIc.example.com", A,
                            opt(options=nsid() + ecs(1, 24, bytes([198, 51, 100, 0]))), 1),
    "aaaa-ecs6-do": query("example.com", AAAA,
                          opt(4096, do=True, options=ecs(2, 56, bytes(range(1, 8)))), 1),
    "nxdomain": query("nope.example.com", A),
    "nxdomain-opt": query("nope.example.com", A, opt(options=nsid()), 1),
    "wildcard": query("x.wild.example.com", TXT),
    "referral": query("host.sub.example.com", A),
    "ds-at-cut": query("sub.example.com", DS, opt(), 1),
    "mx-apex": query("example.com", MX),
    "srv": query("_sip._udp.example.com", SRV),
    "alias": query("alias.example.com", A),
    "any-big": query("many.big.test", ANY, opt(4096), 1),
    "aaaa-big-noedns": query("many.big.test", AAAA),
    "txt-big-512": query("txt.big.test", TXT, opt(512), 1),
    "referral-big": query("www.deleg.big.test", A, opt(1232), 1),
    "mx-big": query("big.test", MX, opt(1232, options=nsid()), 1),
    "srv-big": query("_svc._tcp.big.test", SRV),
    "cname-chain": query("c0.big.test", A, opt(1232, do=True), 1),
    "cname-loop": query("loop1.big.test", A),
    "wild-cname": query("abc.w.big.test", AAAA),
    "long-name": query(long_name, A),
    "long-wild": query("q." + ".".join(["a" * 63] * 3 + ["big", "test"]), A),
    "geo-www": query("www.example.com", A),
    "geo-www-ecs-cn": query("www.example.com", A, opt(options=ecs(1, 24, bytes([175, 16, 199, 0]))), 1),
    "geo-www-ecs6": query("www.example.com", AAAA,
                          opt(options=ecs(2, 32, bytes([0x20, 0x01, 0x02, 0x18]))), 1),
    "geo-ecs0": query("www.example.com", A, opt(options=ecs(1, 0, b"")), 1),
    "rr": query("rr.example.com", A),
    "weighted": query("api.example.com", AAAA, opt(), 1),
    "bulk": query("bulk.big.test", A, opt(1232), 1),
    "bulk-noedns": query("bulk.big.test", AAAA),
    "geo-big-ecs": query("geo.big.test", A, opt(options=ecs(1, 32, bytes([89, 160, 20, 112]))), 1),
    "apex-svc": query("big.test", A),
    "cname-to-svc": query("tosvc.big.test", A),
    "wild-to-geo": query("x.g.big.test", A, opt(options=nsid() + ecs(1, 16, bytes([216, 160]))), 1),
    "refused": query("example.org", A),
    "badvers": query("example.com", A, opt(version=1, options=nsid()), 1),
    "notimp": query("example.com", A, flags=0x2800),
    "chaos": query("example.com", A)[:-2] + b"\x00\x03",
    "formerr-two-opt": query("example.com", A, opt() + opt(), 2),
}

os.makedirs(HERE, exist_ok=True)
for key, data in SEEDS.items():
    with open(os.path.join(HERE, key), "wb") as f:
        f.write(data)
print(f"{len(SEEDS)} seeds in {HERE}")
