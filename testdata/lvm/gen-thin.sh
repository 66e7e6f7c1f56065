#!/bin/bash
# Regenerates the LVM thin fixture thin-pool.img.zst (one disk, the whole disk a PV) and its
# tables. Needs lvm2, thin-provisioning-tools, util-linux (losetup), python3, zstd; runs as root.
# No device-mapper: lvm2 cannot create a thin pool without it ("Can't create thin-pool without
# using device-mapper kernel driver"), so
#   1. lvcreate (--driverloaded n) makes two linear LVs, m (4 MiB) and d (24 MiB);
#   2. thin.py edits the vgcfgbackup text: m and d become pool_tmeta and pool_tdata of a thin
#      pool `pool` (64 KiB chunks) holding thin1 (32 MiB, device 1, 301 mapped blocks: more
#      than a B-tree leaf holds), thin2 (a snapshot of thin1, device 2: shares most blocks, has
#      32 of its own, 7 discarded) and thin3 (8 MiB, device 3, never written);
#      vgcfgrestore --force writes that metadata (lvs then lists the pool and the thin ids);
#   3. thin_restore writes the pool metadata from thin.py's pool.xml; thin_check checks it and
#      thin_dump's output is kept (thin-dump.xml) as the reference for what the pool maps;
#   4. the metadata and thin.py's data blocks are written to the extents of pool_tmeta and
#      pool_tdata.
# thin-sha256.tsv: each thin LV's size, device id, mapped blocks and the sha256 of its content,
# computed by thin.py from its own mapping table (mapped data blocks, zeros elsewhere).
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
LOOP=
cleanup() { [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
. ./nodm.sh

truncate -s 40M "$W/disk.img"
LOOP=$(losetup -f --show "$W/disk.img")
pool_parts "$LOOP" thinvg cccccc-1111-2222-3333-4444-5555-cccccc 24M "$W/vg.txt"
python3 thin.py "$W/vg.txt" "$W"
lvm_ vgcfgrestore -q --force -f "$W/vg-thin.txt" thinvg
lvm_ lvs -a -o lv_name,lv_attr,lv_size,pool_lv,origin,thin_id,seg_pe_ranges thinvg | sed "s#$LOOP#disk#g" > thin-lvs.txt
pe_start=$(lvm_ pvs --noheadings --units b --nosuffix -o pe_start "$LOOP" | tr -d ' ')
losetup -d "$LOOP"; LOOP=
grep -q 'pool_tmeta.*disk:0-3' thin-lvs.txt && grep -q 'pool_tdata.*disk:4-27' thin-lvs.txt

truncate -s 4M "$W/tmeta.img"
thin_restore -q -i "$W/pool.xml" -o "$W/tmeta.img"
thin_check -q "$W/tmeta.img"
thin_dump "$W/tmeta.img" > thin-dump.xml
dd if="$W/tmeta.img" of="$W/disk.img" bs=1M seek=$((pe_start / 1048576)) conv=notrunc,sparse status=none
dd if="$W/tdata.img" of="$W/disk.img" bs=1M seek=$((pe_start / 1048576 + 4)) conv=notrunc status=none
cp "$W/thin.tsv" thin-sha256.tsv
zstd -q -19 -f "$W/disk.img" -o thin-pool.img.zst
echo "thin fixture written"
