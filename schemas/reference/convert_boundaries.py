#!/usr/bin/env python3
"""Converts the kecamatan boundaries of DKI Jakarta from the SQL file of
cahyadsn/wilayah_boundaries (db/kec/wilayah_boundaries_kec_31.sql, commit
3c5a796, MIT licence) into schemas/reference/kecamatan.geojson.

The source's points are [lat, lng]; GeoJSON's are [lng, lat], so each point
is swapped. Coordinates are rounded to 5 decimals (about 1 m). Each feature
carries the Kemendagri code, the name and the kota code, which must equal
schemas/reference/districts.tsv (checked here and by the tests).

Usage: python3 schemas/reference/convert_boundaries.py SOURCE.sql
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def depth(x):
    return 0 if isinstance(x, (int, float)) else 1 + depth(x[0])


def as_multipolygon(path):
    """The source nests a kecamatan of one ring one or two levels less
    than one of several: bring every path to polygons of rings of points."""
    d = depth(path)
    if d == 4:
        return path
    if d == 3:
        return [path]
    if d == 2:
        return [[path]]
    sys.exit(f"unexpected path depth {d}")


def main(source):
    text = open(source, encoding="utf-8").read()
    rows = re.findall(
        r"\('(31\.\d\d\.\d\d)','([^']*)',(-?[\d.]+),(-?[\d.]+),'(\[.*?\])'\)", text
    )
    reference = {}
    with open(os.path.join(HERE, "districts.tsv"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or line.startswith("code\t"):
                continue
            fields = line.rstrip("\n").split("\t")
            reference[fields[0]] = fields[1]
    codes = {r[0] for r in rows}
    if codes != set(reference):
        sys.exit(f"codes differ from districts.tsv: {sorted(codes ^ set(reference))}")
    features = []
    for code, name, _lat, _lng, path in sorted(rows):
        if reference[code] != name:
            sys.exit(f"{code}: name {name!r} differs from districts.tsv {reference[code]!r}")
        polygons = [
            [[[round(p[1], 5), round(p[0], 5)] for p in ring] for ring in polygon]
            for polygon in as_multipolygon(json.loads(path))
        ]
        features.append(
            {
                "type": "Feature",
                "properties": {"code": code, "name": name, "kota_code": code[:5]},
                "geometry": {"type": "MultiPolygon", "coordinates": polygons},
            }
        )
    out = {
        "type": "FeatureCollection",
        "source": "github.com/cahyadsn/wilayah_boundaries, db/kec/wilayah_boundaries_kec_31.sql, commit 3c5a796; "
        "MIT licence, Copyright (c) 2024 Cahya DSN (kecamatan.geojson.LICENSE); "
        "converted by schemas/reference/convert_boundaries.py",
        "features": features,
    }
    with open(os.path.join(HERE, "kecamatan.geojson"), "w", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    print(f"kecamatan.geojson: {len(features)} kecamatan")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
