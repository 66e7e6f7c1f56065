#!/usr/bin/env python3
"""Writes the pieces of the LVM thin fixture (see gen-thin.sh):

  thin.py vg.txt OUT   reads the VG backup (two linear LVs `m`, `d` made by
                       lvcreate), writes OUT/vg-thin.txt (them renamed
                       pool_tmeta/pool_tdata and a thin pool with three thin
                       LVs added), OUT/pool.xml (the pool's mappings, for
                       thin_restore), OUT/tdata.img (the pool's data LV) and
                       OUT/thin.tsv (each thin LV's size, mapped blocks and
                       the sha256 of its content).

The expected content comes from the mappings this script chose, not from
flr: a thin LV's block v is the data block it maps to, or zeros.
"""
import hashlib
import re
import sys

BLOCK = 64 * 1024  # pool chunk: 128 sectors
DATA_BLOCKS = 384  # 24 MiB data LV
SECTOR = 512


def data_block(b):
    """Data block b: each sector names the block and sector, then a fill."""
    out = bytearray()
    for s in range(BLOCK // SECTOR):
        head = ("thin data block %d sector %d\n" % (b, s)).encode()
        fill = bytes(((b * 13 + s * 7 + i) & 0xFF) for i in range(SECTOR))
        out += head + fill[len(head):]
    return bytes(out)


# thin1 (device 1, 32 MiB = 512 blocks): blocks 0..319 mapped except every
# 17th from 5, each to data block (v * 37) mod 320, so no two neighbours are
# contiguous; 301 mappings, more than one B-tree leaf holds (254).
thin1 = {v: (v * 37) % 320 for v in range(320) if v % 17 != 5}
# thin2 (device 2), a snapshot of thin1 that was then written: every 10th
# block from 3 got a new data block (320 onwards), every 50th from 7 was
# discarded (unmapped), the rest is shared with thin1.
thin2 = dict(thin1)
own = [v for v in range(320) if v % 10 == 3]
for i, v in enumerate(own):
    thin2[v] = 320 + i
for v in range(320):
    if v % 50 == 7:
        thin2.pop(v, None)
# thin3 (device 3, 8 MiB): created, never written.
thin3 = {}
DEVICES = [("thin1", 1, 32, thin1, None), ("thin2", 2, 32, thin2, "thin1"), ("thin3", 3, 8, thin3, None)]


def lv_text(name, lvid, status, seg):
    return """
		%s {
			id = "%s"
			status = [%s]
			flags = []
			creation_time = 1700000000
			creation_host = "flr"
			segment_count = 1

			segment1 {
%s
			}
		}
""" % (name, lvid, ", ".join('"%s"' % s for s in status), seg)


def pool_vg_text(text, pool_extents, transaction, thins):
    """The VG backup `text` of two linear LVs `m` and `d`, turned into a thin
    pool `pool` of `pool_extents` extents (64 KiB chunks) with m and d as its
    hidden metadata and data sub-LVs, holding `thins`: (name, device id,
    MiB, origin LV or None) each."""
    text = text.replace("\t\tm {", "\t\tpool_tmeta {").replace("\t\td {", "\t\tpool_tdata {")
    text = re.sub(r'(pool_t(meta|data) \{\n\t\t\tid = "[^"]*"\n\t\t\tstatus = )\[[^\]]*\]', r'\1["READ", "WRITE"]', text)
    extra = lv_text("pool", "pool00-aaaa-bbbb-cccc-dddd-eeee-ffffff", ["READ", "WRITE", "VISIBLE"], """				start_extent = 0
				extent_count = %d
				type = "thin-pool"
				metadata = "pool_tmeta"
				pool = "pool_tdata"
				transaction_id = %d
				chunk_size = 128
				discards = "passdown"
				zero_new_blocks = 1""" % (pool_extents, transaction))
    for name, dev, mib, origin in thins:
        seg = """				start_extent = 0
				extent_count = %d
				type = "thin"
				thin_pool = "pool"
				transaction_id = %d
				device_id = %d""" % (mib, dev - 1, dev)
        if origin:
            seg += '\n				origin = "%s"' % origin
        lvid = (name + "000000")[:6] + "-aaaa-bbbb-cccc-dddd-eeee-ffffff"
        extra += lv_text(name, lvid, ["READ", "WRITE", "VISIBLE"], seg)
    # Insert the new LVs at the end of logical_volumes (its closing brace is
    # the second-last closing brace of the file).
    at = text.rstrip().rfind("}", 0, text.rstrip().rfind("}"))
    return text[:at] + extra.lstrip("\n") + "\t" + text[at:]


def main(vg_txt, out):
    text = pool_vg_text(open(vg_txt).read(), 24, 3, [(n, d, m, o) for n, d, m, _, o in DEVICES])
    open(out + "/vg-thin.txt", "w").write(text)

    xml = ['<superblock uuid="" time="1" transaction="3" flags="0" version="2" data_block_size="128" nr_data_blocks="%d">' % DATA_BLOCKS]
    for name, dev, mib, maps, _ in DEVICES:
        xml.append('  <device dev_id="%d" mapped_blocks="%d" transaction="%d" creation_time="0" snap_time="%d">'
                   % (dev, len(maps), dev - 1, 1 if name == "thin2" else 0))
        for v in sorted(maps):
            xml.append('    <single_mapping origin_block="%d" data_block="%d" time="0"/>' % (v, maps[v]))
        xml.append("  </device>")
    xml.append("</superblock>")
    open(out + "/pool.xml", "w").write("\n".join(xml) + "\n")

    blocks = [data_block(b) for b in range(DATA_BLOCKS)]
    with open(out + "/tdata.img", "wb") as f:
        for b in blocks:
            f.write(b)
    rows = ["# lv\tsize\tdevice_id\tmapped_blocks\tsha256 of the content (mapped data blocks, zeros elsewhere)"]
    zero = bytes(BLOCK)
    for name, dev, mib, maps, _ in DEVICES:
        h = hashlib.sha256()
        for v in range(mib * 1024 * 1024 // BLOCK):
            h.update(blocks[maps[v]] if v in maps else zero)
        rows.append("%s\t%d\t%d\t%d\t%s" % (name, mib << 20, dev, len(maps), h.hexdigest()))
    open(out + "/thin.tsv", "w").write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
