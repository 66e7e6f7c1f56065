#!/usr/bin/env python3
"""Writes a filesystem image into a logical volume's extents, as LVM's own report places them.

usage: place.py LVS.json PVS.json LV IMAGE DEV=FILE:OFFSET...
LVS.json: `lvs --segments --reportformat json --units b --nosuffix -o lv_name,seg_start_pe,
seg_size_pe,stripes,stripe_size,seg_pe_ranges`; PVS.json: `pvs ... -o pv_name,pe_start,vg_extent_size`.
DEV=FILE:OFFSET maps each loop device to the image file and byte offset it stands for."""
import json, sys

rep = json.load(open(sys.argv[1]))["report"][0]
lvs = rep.get("seg") or rep["lv"]
pvs = {p["pv_name"]: p for p in json.load(open(sys.argv[2]))["report"][0]["pv"]}
lv, image = sys.argv[3], open(sys.argv[4], "rb").read()
devs = {}
for a in sys.argv[5:]:
    d, rest = a.split("=", 1)
    f, off = rest.rsplit(":", 1)
    devs[d] = (f, int(off))
ext = int(next(iter(pvs.values()))["vg_extent_size"])
files = {}
def write(dev, pe, within, data):
    f, base = devs[dev]
    fh = files.setdefault(f, open(f, "r+b"))
    fh.seek(base + int(pvs[dev]["pe_start"]) + pe * ext + within)
    fh.write(data)
for seg in (s for s in lvs if s["lv_name"] == lv):
    start = int(seg["seg_start_pe"]) * ext
    size = int(seg["seg_size_pe"]) * ext
    n = int(seg["stripes"])
    ranges = []
    for r in seg["seg_pe_ranges"].split():
        dev, pes = r.rsplit(":", 1)
        ranges.append((dev, int(pes.split("-")[0])))
    assert len(ranges) == n, seg
    data = image[start:start + size].ljust(size, b"\0")
    if n == 1:
        write(ranges[0][0], ranges[0][1], 0, data)
    else:
        chunk = int(seg["stripe_size"])
        for c in range(size // chunk):
            dev, pe = ranges[c % n]
            write(dev, pe, (c // n) * chunk, data[c * chunk:(c + 1) * chunk])
for fh in files.values():
    fh.close()
