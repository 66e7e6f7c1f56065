#!/usr/bin/env python3
"""A differencing VHD (or VHDX) child of PARENT.vhd (PARENT.vhdx) holding
exactly the 4 KiB groups of sectors in which NEW.raw differs from PARENT.raw
(what the kernel or ntfs-3g changed on a copy of the parent), written by
testdata/container/mkdiff.py's VHD or VHDX writer (from the format
specifications, not from flr); the format follows OUT's extension.

  mkchild.py PARENT.vhd PARENT.raw NEW.raw OUT.vhd
  mkchild.py PARENT.vhdx PARENT.raw NEW.raw OUT.vhdx
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "container"))
import mkdiff  # noqa: E402

SECTOR = mkdiff.SECTOR


def main():
    parent, parent_raw, new_raw, out = sys.argv[1:5]
    with open(parent_raw, "rb") as f:
        a = f.read()
    with open(new_raw, "rb") as f:
        b = f.read()
    assert len(a) == len(b), "the two raw disks differ in size"
    # Whole 4 KiB groups (8 sectors, one bitmap byte): the filesystems
    # write 4 KiB blocks, and libvhdi, the oracle, misreads bitmap bytes
    # whose set bits do not reach the byte's last bit.
    writes = {}
    group = 8 * SECTOR
    for g in range(len(a) // group):
        s = slice(g * group, (g + 1) * group)
        if a[s] != b[s]:
            for lba in range(g * 8, g * 8 + 8):
                writes[lba] = b[lba * SECTOR:(lba + 1) * SECTOR]
    if out.endswith(".vhdx"):
        mkdiff.make_vhdx_child(parent, out, writes)
    else:
        mkdiff.make_vhd_child(parent, out, writes)
    print(f"{out}: {len(writes)} sectors held")


if __name__ == "__main__":
    main()
