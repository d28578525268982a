#!/usr/bin/env python3
"""Write a big test zone: N A records (h0..hN-1) and M CNAMEs (c0..cM-1 -> h<i>), or K small
zones into a directory.

  genzone.py big ORIGIN N M FILE
  genzone.py many DIR K
"""
import sys


def big(origin, n, m, path):
    with open(path, "w") as f:
        f.write(f"$ORIGIN {origin}.\n$TTL 300\n")
        f.write("@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n")
        out = []
        for i in range(n):
            out.append(f"h{i} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
            if len(out) >= 65536:
                f.write("".join(out))
                out.clear()
        for i in range(m):
            out.append(f"c{i} IN CNAME h{(i * 7) % n}\n")
            if len(out) >= 65536:
                f.write("".join(out))
                out.clear()
        f.write("".join(out))


def many(d, k):
    for i in range(k):
        with open(f"{d}/zone{i}.example.zone", "w") as f:
            f.write(f"$ORIGIN zone{i}.example.\n$TTL 300\n"
                    "@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\n"
                    "ns1 IN A 192.0.2.1\nwww IN A 192.0.2.2\nstatic IN A 192.0.2.3\n")


if __name__ == "__main__":
    if sys.argv[1] == "big":
        big(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "many":
        many(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
