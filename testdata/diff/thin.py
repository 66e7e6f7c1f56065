#!/usr/bin/env python3
"""Writes the pieces of the LVM thin pair (see gen.sh, target `thin`):

  thin.py vg.txt OLD.raw NEW.raw OUT

OLD.raw and NEW.raw are two versions of one ext4 volume (the ext4 pair,
changed by the kernel). vg.txt is the VG backup of two linear LVs `m` and
`d` made by lvcreate. Written to OUT:

  vg-thin.txt   m and d as pool_tmeta / pool_tdata of pool `pool` (64 KiB
                chunks) with one thin LV `data` (device 1) of OLD's size;
  old.xml       the older pool for thin_restore: every 64 KiB block of OLD
                that is not all zeros mapped to data block (v * 37) mod 384,
                the others unmapped;
  new.xml       the newer pool: the blocks in which NEW differs from OLD were
                written as dm-thin writes them: an even block rewritten in
                place (same data block), an odd one, and any block first
                written now, given a fresh data block from 384 on (copy on
                write, as under a snapshot);
  old-tdata.img, new-tdata.img   the pool's data LV in each version (a
                rewritten block's old bytes stay in its old data block).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lvm"))
from thin import pool_vg_text  # noqa: E402  (the VG text writer of the LVM thin fixture)

BLOCK = 64 * 1024
DATA_BLOCKS = 512  # 32 MiB data LV


def blocks(path):
    data = open(path, "rb").read()
    assert len(data) % BLOCK == 0, path
    return [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]


def xml(maps):
    out = ['<superblock uuid="" time="1" transaction="1" flags="0" version="2" '
           'data_block_size="128" nr_data_blocks="%d">' % DATA_BLOCKS,
           '  <device dev_id="1" mapped_blocks="%d" transaction="0" creation_time="0" snap_time="0">' % len(maps)]
    for v in sorted(maps):
        out.append('    <single_mapping origin_block="%d" data_block="%d" time="0"/>' % (v, maps[v]))
    out += ["  </device>", "</superblock>"]
    return "\n".join(out) + "\n"


def main(vg_txt, old_raw, new_raw, out):
    a, b = blocks(old_raw), blocks(new_raw)
    assert len(a) == len(b) <= 384
    zero = bytes(BLOCK)
    old = {v: (v * 37) % 384 for v in range(len(a)) if a[v] != zero}
    new = dict(old)
    tdata_old = [zero] * DATA_BLOCKS
    for v, d in old.items():
        tdata_old[d] = a[v]
    tdata_new = list(tdata_old)
    fresh = 384
    for v in range(len(a)):
        if a[v] == b[v]:
            continue
        if v in old and v % 2 == 0:
            tdata_new[old[v]] = b[v]
        else:
            new[v] = fresh
            tdata_new[fresh] = b[v]
            fresh += 1
    assert fresh <= DATA_BLOCKS
    mib = len(a) * BLOCK >> 20
    text = pool_vg_text(open(vg_txt).read(), DATA_BLOCKS * BLOCK >> 20, 1, [("data", 1, mib, None)])
    open(out + "/vg-thin.txt", "w").write(text)
    open(out + "/old.xml", "w").write(xml(old))
    open(out + "/new.xml", "w").write(xml(new))
    for name, t in (("old", tdata_old), ("new", tdata_new)):
        with open("%s/%s-tdata.img" % (out, name), "wb") as f:
            f.write(b"".join(t))
    print("thin pair: %d blocks mapped, %d rewritten in place, %d copied on write"
          % (len(old), sum(1 for v in old if old[v] == new.get(v) and a[v] != b[v]), fresh - 384))


if __name__ == "__main__":
    main(*sys.argv[1:5])
