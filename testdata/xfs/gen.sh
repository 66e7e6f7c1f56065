#!/bin/bash
# Regenerates the XFS fixtures. Needs xfsprogs (mkfs.xfs, xfs_db), util-linux (mount -o loop,
# as root), python3, zstd. The kernel here no longer mounts v4 (crc=0) filesystems, so the v4
# image is filled by mkfs.xfs itself from a protofile (`mkfs.xfs -p`); the v5 one through a
# loop mount. mkfs.xfs refuses filesystems under 300 MB unless it thinks it runs under
# xfstests (QA_CHECK_FS/TEST_DIR/TEST_DEV), which is how these stay small.
#
#  v5.img.zst  v5 (crc=1, bigtime=1, ftype=1), 4 KiB blocks, one AG, 40 MiB:
#              /etc (short-form dir), /block (block dir), /leaf (leaf dir), /node (node dir,
#              3000 entries), /btree (a directory whose blocks lie in 1-block free-space holes,
#              so its extent list is a B+tree), /frag/* (the files whose deleted neighbours
#              made the holes), /sparse.bin (every other 4 KiB block a hole: an extent B+tree
#              file), /big.bin (4 GiB + 8 KiB, all hole but the last 8 KiB), symlinks (short
#              in the inode, long in a block), /times/* with mtimes in 1901 and 2100.
#  v4.img.zst  v4 (crc=0), 4 KiB blocks, 24 MiB, from a protofile: short-form, block, leaf and
#              node dirs, a 1 MiB file, symlinks.
#  v5-dir16k.img.zst, v5-1k.img.zst  the same tree (v4.tsv) on v5 with 4 KiB sectors and
#              16 KiB directory blocks, and with 1 KiB blocks and 4 KiB directory blocks;
#  v4-noftype.img.zst  the same tree on v4 without file types in directory entries (ftype=0,
#              as RHEL 7's first releases made them).
# Manifests (kind path size sha256) from the source trees: v5.tsv, v4.tsv; mtimes from the
# source files (stat): v5-times.tsv. xfs_db's view of the directory and file formats, for
# the record: v5.formats.txt, v4.formats.txt. big.bin is listed in v5-big.tsv (size and the
# sha256 of its last 8 KiB), not in v5.tsv, so the tests do not hash 4 GiB of zeros.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
M=$W/mnt
cleanup() { mountpoint -q "$M" 2>/dev/null && umount "$M"; rm -rf "$W"; }
trap cleanup EXIT
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1
mkdir -p "$M"

manifest() { # SRC OUT [exclude]
  (cd "$1" && find . -mindepth 1 \( -type f -o -type l -o -type d \) ! -path "./${3:-//}" | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}

# ---- v5 source tree ---------------------------------------------------------------------
S=$W/v5
mkdir -p "$S/etc" "$S/block" "$S/leaf" "$S/node" "$S/btree" "$S/frag" "$S/times" "$S/links"
printf 'rhel-vm-01\n' > "$S/etc/hostname"
printf '/dev/mapper/rootvg-rootlv / xfs defaults 0 0\n' > "$S/etc/fstab"
python3 - "$S" <<'PY'
import sys, os
s = sys.argv[1]
def data(n, seed):
    return bytes((i * 131 + seed * 7 + (i >> 9)) % 256 for i in range(n))
for i in range(40):
    open(f"{s}/block/file-{i:03d}.txt", "w").write(f"block entry {i}\n")
for i in range(400):
    open(f"{s}/leaf/entry-with-a-longer-name-{i:05d}", "w").write(f"leaf {i}\n")
for i in range(3000):
    open(f"{s}/node/n{i:06d}-" + "x" * 40, "w").write("" if i % 3 else f"node {i}\n")
for i in range(2500):
    open(f"{s}/btree/b{i:06d}-" + "y" * 120, "w").write("")
for i in range(0, 1200, 2):
    open(f"{s}/frag/f{i:05d}", "wb").write(data(4096, i))
# every other 4 KiB block zero: written sparse, an extent B+tree file
b = bytearray()
for i in range(600):
    b += data(4096, i + 1) if i % 2 == 0 else bytes(4096)
b += b"tail"
open(f"{s}/sparse.bin", "wb").write(b)
open(f"{s}/medium.bin", "wb").write(data(3 * 1024 * 1024 + 123, 99))
PY
ln -s ../etc/hostname "$S/links/short"
long=$(python3 -c 'print("/".join(["d%03d" % i for i in range(200)]), end="")')
ln -s "$long" "$S/links/long"
printf 'old\n' > "$S/times/1901"; touch -d '1901-12-14 20:45:53 UTC' "$S/times/1901" || touch -d '1902-01-01 UTC' "$S/times/1901"
printf 'future\n' > "$S/times/2100"; touch -d '2100-01-01 00:00:00 UTC' "$S/times/2100"
manifest "$S" v5.tsv
(cd "$S" && for f in times/1901 times/2100 etc/hostname; do printf '%s\t%s\n' "$f" "$(stat -c %Y "$f")"; done) > v5-times.tsv

# ---- v5 image, filled through a loop mount ----------------------------------------------
truncate -s 40M "$W/v5.img"
mkfs.xfs -q -f -m crc=1,bigtime=1,uuid=7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d -d agcount=1 -L xfsv5 "$W/v5.img"
mount -o loop "$W/v5.img" "$M"
cp -a "$S/etc" "$S/block" "$S/leaf" "$S/node" "$S/times" "$S/links" "$S/medium.bin" "$M/"
# Fragment the free space: 1200 one-block files, then every other one deleted.
mkdir "$M/frag"
python3 - "$M/frag" <<'PY'
import sys, os
d = sys.argv[1]
def data(n, seed):
    return bytes((i * 131 + seed * 7 + (i >> 9)) % 256 for i in range(n))
for i in range(1200):
    fd = os.open(f"{d}/f{i:05d}", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data(4096, i)); os.fsync(fd); os.close(fd)
PY
sync
for i in $(seq 1 2 1199); do rm "$M/frag/$(printf 'f%05d' "$i")"; done
sync
mkdir "$M/btree"
(cd "$S/btree" && for f in *; do : > "$M/btree/$f"; done)
cp --sparse=always "$S/sparse.bin" "$M/sparse.bin"
truncate -s $((4 * 1024 * 1024 * 1024)) "$M/big.bin"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*7+3)%256 for i in range(8192)))' >> "$M/big.bin"
touch -d '2100-01-01 00:00:00 UTC' "$M/times/2100"
umount "$M"
{ printf 'big.bin\t%s\t' $((4 * 1024 * 1024 * 1024 + 8192))
  python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*7+3)%256 for i in range(8192)))' | sha256sum | cut -d' ' -f1; } > v5-big.tsv

formats() { # IMG OUT paths...
  local img=$1 out=$2; shift 2
  for p in "$@"; do
    printf '%s\t' "$p"
    xfs_db -r -c "path /$p" -c "print core.format core.nextents core.version" "$img" | tr '\n' ' '
    echo
  done > "$out"
}
formats "$W/v5.img" v5.formats.txt etc block leaf node btree sparse.bin big.bin medium.bin links/long
grep -q 'core.format = 3 (btree)' <(grep '^btree' v5.formats.txt) || { echo "btree dir is not in btree format"; cat v5.formats.txt; exit 1; }
grep -q 'core.format = 3 (btree)' <(grep '^sparse.bin' v5.formats.txt) || { echo "sparse.bin is not a btree file"; exit 1; }

# ---- v4 image, from a protofile ---------------------------------------------------------
S4=$W/v4
mkdir -p "$S4/etc" "$S4/block" "$S4/leaf" "$S4/node"
printf 'v4 host\n' > "$S4/etc/hostname"
python3 - "$S4" <<'PY'
import sys
s = sys.argv[1]
for i in range(40):
    open(f"{s}/block/file-{i:03d}.txt", "w").write(f"v4 block {i}\n")
for i in range(400):
    open(f"{s}/leaf/entry-with-a-longer-name-{i:05d}", "w").write(f"v4 leaf {i}\n")
for i in range(2000):
    open(f"{s}/node/n{i:06d}-" + "z" * 40, "w").write(f"v4 node {i}\n" if i % 5 == 0 else "")
open(f"{s}/data.bin", "wb").write(bytes((i * 29 + 1) % 253 for i in range(1 << 20)))
PY
ln -s etc/hostname "$S4/hostlink"
manifest "$S4" v4.tsv
python3 - "$S4" > "$W/proto" <<'PY'
import os, sys
root = sys.argv[1]
print("boot"); print("0 0")
def walk(d, depth):
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        ind = " " * depth
        if os.path.islink(p):
            print(f"{ind}{n} l--777 0 0 {os.readlink(p)}")
        elif os.path.isdir(p):
            print(f"{ind}{n} d--755 0 0"); walk(p, depth + 1); print(f"{ind}$")
        else:
            print(f"{ind}{n} ---644 0 0 {p}")
print("d--755 0 0"); walk(root, 1); print("$")
PY
truncate -s 24M "$W/v4.img"
mkfs.xfs -q -f -m crc=0 -m uuid=1b2c3d4e-5f60-4172-8394-a5b6c7d8e9f0 -L xfsv4 -p "$W/proto" "$W/v4.img" 2>&1 | grep -v deprecated || true
formats "$W/v4.img" v4.formats.txt etc block leaf node data.bin

# ---- v5 geometry variants from the same protofile (the v4 tree): 4 KiB sectors with 16 KiB
# directory blocks (4 filesystem blocks each), and 1 KiB blocks with 4 KiB directory blocks.
truncate -s 24M "$W/v5-dir16k.img"
mkfs.xfs -q -f -b size=4096 -s size=4096 -n size=16384 -m crc=1 -L dir16k -p "$W/proto" "$W/v5-dir16k.img"
truncate -s 24M "$W/v5-1k.img"
mkfs.xfs -q -f -b size=1024 -n size=4096 -m crc=1 -L b1k -p "$W/proto" "$W/v5-1k.img"
truncate -s 24M "$W/v4-noftype.img"
mkfs.xfs -q -f -m crc=0 -n ftype=0 -L noftype -p "$W/proto" "$W/v4-noftype.img" 2>&1 | grep -v deprecated || true
formats "$W/v5-dir16k.img" v5-dir16k.formats.txt etc block leaf node data.bin
formats "$W/v5-1k.img" v5-1k.formats.txt etc block leaf node data.bin

zstd -19 --long -q -f "$W/v5.img" -o v5.img.zst
zstd -19 --long -q -f "$W/v4.img" -o v4.img.zst
zstd -19 --long -q -f "$W/v5-dir16k.img" -o v5-dir16k.img.zst
zstd -19 --long -q -f "$W/v5-1k.img" -o v5-1k.img.zst
zstd -19 --long -q -f "$W/v4-noftype.img" -o v4-noftype.img.zst
ls -l ./*.zst
