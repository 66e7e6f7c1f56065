#!/bin/bash
# Regenerates the LVM2 fixtures. Needs lvm2, xfsprogs, gdisk, util-linux (losetup, mount), python3,
# zstd; runs as root. Device-mapper is not needed: every LVM command runs with --driverloaded n
# (and LVs with --activate n --zero n), so LVM writes only its labels and metadata; each LV's
# filesystem is made as an image file and written to the extents that `lvs --segments -o
# +seg_pe_ranges` and `pvs -o +pe_start` report (place.py).
#
#  two-pv-1.img.zst  disk 1, 32 MiB, the whole disk a PV (no partition table)
#  two-pv-2.img.zst  disk 2, 48 MiB, GPT with p1 a PV
#     VG datavg (1 MiB extents) on both: stripe: 16 MiB striped over both PVs (2 × 64 KiB),
#     solo: 16 MiB linear on disk 2 only; span: 36 MiB linear, made last so that it must take
#     the 23 extents left on disk 1 and 13 on disk 2. All three XFS.
# Manifests from the source trees: span.tsv, stripe.tsv, solo.tsv; whole-LV sha256s and sizes
# (of the images written): lv-sha256.tsv; the PV UUIDs: pv-uuids.tsv; lvs/pvs reports as .txt.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
LOOPS=()
cleanup() {
  mountpoint -q "$W/mnt" 2>/dev/null && umount "$W/mnt"
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1
. ./nodm.sh
mkdir -p "$W/mnt"

manifest() { # SRC OUT
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}
# mkxfs NAME SIZE UUID: an XFS image holding the tree $W/src-NAME, filled through a loop mount.
mkxfs() {
  truncate -s "$2" "$W/$1.xfs"
  mkfs.xfs -q -f -m uuid="$3" -L "$1" "$W/$1.xfs"
  mount -o loop "$W/$1.xfs" "$W/mnt"
  cp -a "$W/src-$1/." "$W/mnt/"
  umount "$W/mnt"
  manifest "$W/src-$1" "$1.tsv"
}
data() { python3 -c 'import sys; n,s=int(sys.argv[1]),int(sys.argv[2]); sys.stdout.buffer.write(bytes((i*131+s*7+(i>>9))%256 for i in range(n)))' "$@"; }

mkdir -p "$W/src-span/db" "$W/src-stripe/logs" "$W/src-solo"
printf 'spanning two disks\n' > "$W/src-span/README"
data $((14 * 1024 * 1024 + 77)) 1 > "$W/src-span/db/big.bin"
data 300000 2 > "$W/src-span/db/small.bin"
printf 'striped over two PVs\n' > "$W/src-stripe/README"
data $((3 * 1024 * 1024 + 5)) 3 > "$W/src-stripe/logs/app.log"
ln -s logs/app.log "$W/src-stripe/current"
printf 'only on disk 2\n' > "$W/src-solo/README"
mkxfs span 36M 11111111-2222-4333-8444-555555555555
mkxfs stripe 16M 22222222-3333-4444-8555-666666666666
mkxfs solo 16M 33333333-4444-4555-8666-777777777777

truncate -s 32M "$W/d1.img"
truncate -s 48M "$W/d2.img"
sgdisk -U 7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b -n 1:2048:0 -t 1:8e00 -c 1:lvm -u 1:8f9a0b1c-2d3e-4f40-9b5c-6d7e8f9a0b1c "$W/d2.img" >/dev/null
p1_start=$(( $(sgdisk -i 1 "$W/d2.img" | awk '/First sector/ {print $3}') * 512 ))
p1_end=$(( ($(sgdisk -i 1 "$W/d2.img" | awk '/Last sector/ {print $3}') + 1) * 512 ))
A=$(losetup -f --show "$W/d1.img"); LOOPS+=("$A")
B=$(losetup -f --show -o "$p1_start" --sizelimit $((p1_end - p1_start)) "$W/d2.img"); LOOPS+=("$B")
lvm_ pvcreate -q -u aaaaaa-1111-2222-3333-4444-5555-aaaaaa --norestorefile "$A"
lvm_ pvcreate -q -u bbbbbb-1111-2222-3333-4444-5555-bbbbbb --norestorefile "$B"
lvm_ vgcreate -q -s 1M datavg "$A" "$B"
lvm_ lvcreate -q --activate n --zero n -n stripe -i 2 -I 64k -L 16M datavg
lvm_ lvcreate -q --activate n --zero n -n solo -L 16M datavg "$B"
lvm_ lvcreate -q --activate n --zero n -n span -L 36M datavg "$A" "$B"
lvm_ lvs --segments --reportformat json --units b --nosuffix -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges datavg > "$W/lvs.json"
lvm_ pvs --reportformat json --units b --nosuffix -o pv_name,pe_start,vg_extent_size > "$W/pvs.json"
lvm_ lvs --segments -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges datavg | sed "s#$A#disk1#g;s#$B#disk2p1#g" > lvs.txt
lvm_ pvs -o pv_name,pv_uuid,pe_start,pv_size | sed "s#$A#disk1#g;s#$B#disk2p1#g" > pvs.txt
for lv in span stripe solo; do
  python3 place.py "$W/lvs.json" "$W/pvs.json" "$lv" "$W/$lv.xfs" "$A=$W/d1.img:0" "$B=$W/d2.img:$p1_start"
done
for lv in span stripe solo; do printf '%s\t%s\t%s\n' "$lv" "$(stat -c %s "$W/$lv.xfs")" "$(sha256sum < "$W/$lv.xfs" | cut -d' ' -f1)"; done > lv-sha256.tsv
printf 'disk1\taaaaaa-1111-2222-3333-4444-5555-aaaaaa\ndisk2p1\tbbbbbb-1111-2222-3333-4444-5555-bbbbbb\n' > pv-uuids.tsv
for l in "${LOOPS[@]}"; do losetup -d "$l"; done; LOOPS=()
zstd -19 --long -q -f "$W/d1.img" -o two-pv-1.img.zst
zstd -19 --long -q -f "$W/d2.img" -o two-pv-2.img.zst
ls -l ./*.zst
