#!/bin/bash
# Regenerates the crash-consistent XFS fixtures: filesystems the kernel left with a dirty log,
# as a snapshot of a running VM leaves them. Needs root, xfsprogs (mkfs.xfs, xfs_io,
# xfs_logprint), util-linux (loop mounts), zstd, sha256sum.
#
# Each image: mkfs, loop mount, a first tree, unmount and mount again (so it is on disk and the
# log is clean), then changes, `sync`, a few changes more, and `xfs_io -x -c "shutdown -f"`
# (the log is forced to disk, nothing else is written back: what a power cut after the log
# write leaves), unmount, keep the image. The oracle is what the kernel shows after mounting a
# SECOND copy (it replays the log): every path's kind, size and sha256, hashed from that
# mount, never from flr (dirty-*.tsv, `kind path size sha256` like the other manifests).
#
#  dirty-v5.img.zst  v5, 32 MiB, one AG. After the first tree: new folders with files (one of
#     2 MB), a renamed file, a deleted file, a file grown and one truncated, a symlink, 300
#     files in a new folder (new inode chunks: inode-create items), then `sync`; then files
#     created without a sync (their data never reached the disk: the kernel shows them
#     empty) and a new empty folder; shutdown.
#  dirty-v5-wrap.img.zst  v5, 32 MiB, the smallest log mkfs allows (1368 blocks): rounds of
#     400 creates and a folder removal, each synced, until the log's tail lies after its head
#     (the live part of the log wraps past its physical end and the AIL has written some
#     metadata back, so replay must skip items older than the on-disk LSNs); shutdown.
# dirty-*.log.txt: xfs_logprint's head and tail of each image, for the record.
#
# v4 (crc=0) logs cannot be made here: this kernel is built without CONFIG_XFS_SUPPORT_V4, so
# it neither mounts nor replays v4 filesystems.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
M=$W/mnt
cleanup() { mountpoint -q "$M" 2>/dev/null && umount "$M"; rm -rf "$W"; }
trap cleanup EXIT
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1
mkdir -p "$M"

manifest() { # DIR OUT
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}

# The kernel's view of IMG after its log replay, from a copy.
oracle() { # IMG OUT
  cp --sparse=always "$1" "$W/copy.img"
  mount -o loop "$W/copy.img" "$M"
  manifest "$M" "$2"
  umount "$M"
  rm -f "$W/copy.img"
}

data() { # N SEED
  python3 -c 'import sys; n,s=int(sys.argv[1]),int(sys.argv[2]); sys.stdout.buffer.write(bytes((i*131+s*7+(i>>9))%256 for i in range(n)))' "$1" "$2"
}

logstate() { xfs_logprint -t "$1" 2>/dev/null | grep 'log tail' | sed -n 1p; }

# ---- dirty-v5 ------------------------------------------------------------------------------
I=$W/dirty-v5.img
truncate -s 32M "$I"
mkfs.xfs -q -f -m crc=1,uuid=3c1d2e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5 -d agcount=1 -L dirtyv5 "$I"
mount -o loop "$I" "$M"
mkdir -p "$M/etc" "$M/home/azure" "$M/var/log"
printf 'rhel-vm-01\n' > "$M/etc/hostname"
data 10000 1 > "$M/home/azure/grow.bin"
data 300000 2 > "$M/home/azure/shrink.bin"
printf 'to be renamed\n' > "$M/home/azure/old-name.txt"
printf 'to be deleted\n' > "$M/home/azure/doomed.txt"
data 5000 3 > "$M/var/log/messages"
umount "$M"
mount -o loop "$I" "$M"
mkdir -p "$M/new/deeper"
data 2000000 4 > "$M/new/two-megabytes.bin"
printf 'hello from the log\n' > "$M/new/deeper/note.txt"
mv "$M/home/azure/old-name.txt" "$M/home/azure/new-name.txt"
rm "$M/home/azure/doomed.txt"
data 70000 5 >> "$M/home/azure/grow.bin"
truncate -s 4097 "$M/home/azure/shrink.bin"
ln -s ../etc/hostname "$M/new/hostlink"
mkdir "$M/many"
for i in $(seq 1 300); do printf 'file %d\n' "$i" > "$M/many/f$(printf %04d "$i")"; done
data 3000 6 >> "$M/var/log/messages"
sync
printf 'never synced\n' > "$M/new/unsynced.txt"
mkdir "$M/new/empty-after-sync"
xfs_io -x -c "shutdown -f" "$M"
umount "$M"
logstate "$I" > dirty-v5.log.txt
oracle "$I" dirty-v5.tsv

# ---- dirty-v5-wrap -------------------------------------------------------------------------
I=$W/dirty-v5-wrap.img
truncate -s 32M "$I"
mkfs.xfs -q -f -m crc=1,uuid=4d2e3f50-6b7c-4d8e-9fa0-b1c2d3e4f506 -d agcount=1 -l size=1368b -L wrap "$I"
mount -o loop "$I" "$M"
wrapped=
for r in $(seq 1 80); do
  mkdir -p "$M/r$r"
  for i in $(seq 1 400); do printf '%d %d\n' "$r" "$i" > "$M/r$r/f$i"; done
  rm -rf "$M/r$((r - 2))"
  sync
  s=$(logstate "$I")
  t=$(echo "$s" | awk '{print $3}'); h=$(echo "$s" | awk '{print $5}')
  if [ "$r" -gt 3 ] && [ "$t" -gt "$h" ]; then wrapped=$r; break; fi
done
[ -n "$wrapped" ] || { echo "the log never wrapped"; exit 1; }
data 123456 7 > "$M/last.bin"
sync
xfs_io -x -c "shutdown -f" "$M"
umount "$M"
logstate "$I" > dirty-v5-wrap.log.txt
oracle "$I" dirty-v5-wrap.tsv

zstd -19 --long -q -f "$W/dirty-v5.img" -o dirty-v5.img.zst
zstd -19 --long -q -f "$W/dirty-v5-wrap.img" -o dirty-v5-wrap.img.zst
ls -l dirty-*.zst
cat dirty-*.log.txt
