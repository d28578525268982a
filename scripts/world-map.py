#!/usr/bin/env python3
"""Make the dashboard's world outline (src/admin/dashboard/world.svg) from Natural Earth's
1:110m land polygons as the npm package `world-atlas` ships them (TopoJSON).

Run at development time only; its output is committed, so builds need neither npm nor
this script:

    cd /tmp && npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 scripts/world-map.py /tmp/package/land-110m.json > src/admin/dashboard/world.svg

Natural Earth's data is in the public domain; world-atlas (Mike Bostock) is under the ISC
licence, whose notice the output carries.

Projection: equirectangular, one unit per degree: x = lon + 180, y = LAT_TOP - lat, over
latitudes LAT_TOP..LAT_BOTTOM (Antarctica is left out: no datacenter is there and it
would take a fifth of the map). Points are rounded to DECIMALS and a point closer than
MIN_STEP degrees to the last one kept is dropped, to keep the file small.
"""

import json
import sys

LAT_TOP = 84
LAT_BOTTOM = -58
DECIMALS = 1
MIN_STEP = 0.35
# Rings smaller than this (in square degrees) are dropped: small islands.
MIN_AREA = 0.5


def decode_arcs(topo):
    """TopoJSON arcs: quantized and delta-encoded; returns lists of (lon, lat)."""
    tr = topo.get("transform")
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for p in arc:
            if tr:
                x += p[0]
                y += p[1]
                pts.append(
                    (x * tr["scale"][0] + tr["translate"][0], y * tr["scale"][1] + tr["translate"][1])
                )
            else:
                pts.append((p[0], p[1]))
        arcs.append(pts)
    return arcs


def ring_points(ring, arcs):
    pts = []
    for i in ring:
        arc = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        if pts:
            arc = arc[1:]
        pts.extend(arc)
    return pts


def area(pts):
    a = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        a += x0 * y1 - x1 * y0
    return abs(a) / 2


def polygons(topo):
    arcs = decode_arcs(topo)
    for obj in topo["objects"].values():
        geoms = obj["geometries"] if obj["type"] == "GeometryCollection" else [obj]
        for g in geoms:
            if g["type"] == "Polygon":
                yield [ring_points(r, arcs) for r in g["arcs"]]
            elif g["type"] == "MultiPolygon":
                for poly in g["arcs"]:
                    yield [ring_points(r, arcs) for r in poly]


def unwrap(ring):
    """A ring that crosses the antimeridian (Chukotka, Fiji) jumps from 180 to -180; drawn
    as it is, it would cut a line across the whole map. Its longitudes are made continuous
    instead (going past 180 or -180), and a copy shifted by 360 degrees draws the part that
    falls off the other edge (the SVG's viewBox clips both)."""
    out = [ring[0]]
    for lon, lat in ring[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while prev - lon > 180:
            lon += 360
        out.append((lon, lat))
    if max(lon for lon, _ in out) > 180:
        return [clip(out, 180, keep_below=True),
                clip([(lon - 360, lat) for lon, lat in out], -180, keep_below=False)]
    if min(lon for lon, _ in out) < -180:
        return [clip(out, -180, keep_below=False),
                clip([(lon + 360, lat) for lon, lat in out], 180, keep_below=True)]
    return [out]


def clip(ring, edge, keep_below):
    """Sutherland-Hodgman against one vertical line: the part of the ring with lon <= edge
    (keep_below) or lon >= edge."""
    inside = (lambda p: p[0] <= edge) if keep_below else (lambda p: p[0] >= edge)
    out = []
    for i, cur in enumerate(ring):
        prev = ring[i - 1]
        if inside(cur):
            if not inside(prev):
                out.append(cross(prev, cur, edge))
            out.append(cur)
        elif inside(prev):
            out.append(cross(prev, cur, edge))
    return out


def cross(a, b, edge):
    t = (edge - a[0]) / (b[0] - a[0])
    return (edge, a[1] + t * (b[1] - a[1]))


def fmt(v):
    s = f"{v:.{DECIMALS}f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    # ".7" and "-.7": SVG path numbers need no leading zero.
    if s.startswith("0."):
        s = s[1:]
    elif s.startswith("-0."):
        s = "-" + s[2:]
    return s


def join_numbers(nums):
    """Numbers of a path separated only where needed: a minus sign or a second decimal
    point starts a new number by itself."""
    out = ""
    for n in nums:
        if out and not (n.startswith("-") or (n.startswith(".") and "." in last)):
            out += " "
        out += n
        last = n
    return out


def ring_path(pts):
    kept = []
    for lon, lat in pts:
        x = round(lon + 180, DECIMALS)
        y = round(LAT_TOP - max(min(lat, LAT_TOP), LAT_BOTTOM), DECIMALS)
        if kept and abs(x - kept[-1][0]) < MIN_STEP and abs(y - kept[-1][1]) < MIN_STEP:
            continue
        kept.append((x, y))
    if len(kept) < 3:
        return ""
    # One absolute move, then relative lines (an "l" repeats implicitly).
    nums = []
    px, py = kept[0]
    for x, y in kept[1:]:
        nums.append(fmt(round(x - px, DECIMALS)))
        nums.append(fmt(round(y - py, DECIMALS)))
        px, py = x, y
    return f"M{join_numbers([fmt(kept[0][0]), fmt(kept[0][1])])}l{join_numbers(nums)}z"


def main():
    with open(sys.argv[1]) as f:
        topo = json.load(f)
    parts = []
    for poly in polygons(topo):
        outer = poly[0]
        if max(lat for _, lat in outer) < LAT_BOTTOM:
            continue  # Antarctica
        if area(outer) < MIN_AREA:
            continue
        for ring in poly:
            for copy in unwrap(ring):
                p = ring_path(copy)
                if p:
                    parts.append(p)
    width = 360
    height = LAT_TOP - LAT_BOTTOM
    print(
        f'<!-- Land outline from Natural Earth 1:110m (public domain) via world-atlas 2.0.2 '
        f'(Copyright 2013-2019 Michael Bostock, ISC licence). Made by scripts/world-map.py: '
        f'equirectangular, x = lon + 180, y = {LAT_TOP} - lat. -->'
    )
    print(
        f'<path class="land" data-top="{LAT_TOP}" data-width="{width}" data-height="{height}" d="{"".join(parts)}"/>'
    )


if __name__ == "__main__":
    main()
