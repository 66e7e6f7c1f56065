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
#     400 creates and a folder removal, each synced, until the head has passed the log's
#     physical end twice; then a folder of 300 files created, synced and removed (its logged
#     directory blocks and inode clusters are cancelled: the replay must skip their older
#     copies and the inode-create items of the freed chunks) and a new file; shutdown. The
#     live part of the log crosses the physical end (tail block > head block, checked).
#  dirty-v5-lsn.img.zst  the same rounds, stopped after the head's first pass over the end:
#     the AIL has written metadata back under log pressure with newer LSNs than some items
#     of the live log, which the replay must skip (v5 LSN ordering).
# dirty-*.log.txt: xfs_logprint's head and tail of each image, for the record.
# dirty-*.kernel-replay.tsv: how many items of each kind the kernel's recovery applied,
# skipped as older than the disk, or skipped as cancelled, counted from its tracepoints
# (xfs:xfs_log_recover_*) while it mounted the copy; the tests compare flr's counts.
#
# v4 (crc=0): gen-dirty-v4.sh (this machine's kernel is built without CONFIG_XFS_SUPPORT_V4,
# so that image is made and replayed by Debian's kernel under qemu).
set -euo pipefail
cd "$(dirname "$0")"
. ../dirty-lib.sh
# mkfs.xfs makes filesystems under 300 MB only when it thinks it runs under xfstests.
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1

# The kernel's recovery events (tracefs), counted per kind while the copy mounts.
T=/sys/kernel/tracing
EVENTS="buf_recover buf_skip buf_cancel buf_cancel_add buf_cancel_ref_inc buf_inode_buf buf_reg_buf inode_recover inode_skip inode_cancel icreate_recover icreate_cancel"
trace_events() { # 0|1
  for e in $EVENTS; do echo "$1" > "$T/events/xfs/xfs_log_recover_$e/enable"; done
}

# The kernel's view of IMG after its log replay, from a copy: the manifest OUT, and its
# recovery's item counts in OUT with .tsv replaced by .kernel-replay.tsv.
oracle() { # IMG OUT
  cp --sparse=always "$1" "$W/copy.img"
  mountpoint -q "$T" || mount -t tracefs nodev "$T"
  echo 0 > "$T/tracing_on"
  echo 65536 > "$T/buffer_size_kb"
  echo > "$T/trace"
  trace_events 1
  echo 1 > "$T/tracing_on"
  mount -o loop "$W/copy.img" "$M"
  echo 0 > "$T/tracing_on"
  trace_events 0
  grep -q '# entries-in-buffer/entries-written: \([0-9]*\)/\1 ' "$T/trace" \
    || { echo "trace events were lost"; grep entries-in-buffer "$T/trace"; exit 1; }
  for e in $EVENTS; do
    printf '%s\t%s\n' "$e" "$(grep -c " xfs_log_recover_$e:" "$T/trace" || true)"
  done > "${2%.tsv}.kernel-replay.tsv"
  echo > "$T/trace"
  manifest "$M" "$2"
  umount "$M"
  rm -f "$W/copy.img"
}


logstate() { xfs_logprint -t "$1" 2>/dev/null | grep 'log tail' | sed -n 1p; }

# ---- dirty-v5 ------------------------------------------------------------------------------
I=$W/dirty-v5.img
truncate -s 32M "$I"
mkfs.xfs -q -f -m crc=1,uuid=3c1d2e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5 -d agcount=1 -L dirtyv5 "$I"
mount -o loop "$I" "$M"
first_tree rhel-vm-01
umount "$M"
mount -o loop "$I" "$M"
changes 'hello from the log'
xfs_io -x -c "shutdown -f" "$M"
umount "$M"
logstate "$I" > dirty-v5.log.txt
oracle "$I" dirty-v5.tsv

# ---- dirty-v5-wrap, dirty-v5-lsn ------------------------------------------------------------
# wrap_image NAME UUID CROSSINGS [cancel]: rounds of 400 creates and a folder removal, each
# synced, until the log head has passed the physical end CROSSINGS times; with `cancel`, then
# a folder of 300 files created, synced and removed; then a new file, sync; the live part of
# the log must cross the physical end (tail block > head block); shutdown.
wrap_image() {
  local name=$1 uuid=$2 want=$3 cancel=${4:-}
  I=$W/$name.img
  truncate -s 32M "$I"
  mkfs.xfs -q -f -m crc=1,uuid="$uuid" -d agcount=1 -l size=1368b -L wrap "$I"
  mount -o loop "$I" "$M"
  local crossings=0 prev=0 r h s t
  for r in $(seq 1 120); do
    mkdir -p "$M/r$r"
    for i in $(seq 1 400); do printf '%d %d\n' "$r" "$i" > "$M/r$r/f$i"; done
    rm -rf "$M/r$((r - 2))"
    sync
    h=$(logstate "$I" | awk '{print $5}')
    if [ "$h" -lt "$prev" ]; then crossings=$((crossings + 1)); fi
    prev=$h
    [ "$crossings" -lt "$want" ] || break
  done
  [ "$crossings" -ge "$want" ] || { echo "$name: the log did not wrap $want times"; exit 1; }
  if [ -n "$cancel" ]; then
    mkdir "$M/gone"
    for i in $(seq 1 300); do printf 'gone %d\n' "$i" > "$M/gone/file-with-a-long-name-$i"; done
    sync
    rm -rf "$M/gone"
  fi
  data 123456 7 > "$M/last.bin"
  sync
  xfs_io -x -c "shutdown -f" "$M"
  umount "$M"
  s=$(logstate "$I")
  t=$(echo "$s" | awk '{print $3}'); h=$(echo "$s" | awk '{print $5}')
  [ "$t" -gt "$h" ] || { echo "$name: the live log does not cross the end of the log: $s"; exit 1; }
  echo "$s" > "$name.log.txt"
  oracle "$I" "$name.tsv"
}
count() { awk -v k="$2" '$1 == k { print $2 }' "$1.kernel-replay.tsv"; }
# Which metadata the AIL had written back when the log was cut is a matter of timing: each
# image is made again until the kernel's own recovery shows what the image is there for.
for try in $(seq 1 20); do
  wrap_image dirty-v5-wrap 4d2e3f50-6b7c-4d8e-9fa0-b1c2d3e4f506 2 cancel
  n=$(( $(count dirty-v5-wrap buf_cancel) - $(count dirty-v5-wrap buf_cancel_add) \
      - $(count dirty-v5-wrap buf_cancel_ref_inc) + $(count dirty-v5-wrap inode_cancel) ))
  [ "$n" -gt 0 ] && break
  [ "$try" -lt 20 ] || { echo "dirty-v5-wrap: no cancelled item was skipped"; exit 1; }
done
for try in $(seq 1 40); do
  wrap_image dirty-v5-lsn 6f405162-8d9e-4fa0-b1c2-d3e4f5061728 1
  [ $(( $(count dirty-v5-lsn inode_skip) + $(count dirty-v5-lsn buf_skip) )) -gt 0 ] && break
  [ "$try" -lt 40 ] || { echo "dirty-v5-lsn: no item older than the disk"; exit 1; }
done

zstd -19 --long -q -f "$W/dirty-v5.img" -o dirty-v5.img.zst
zstd -19 --long -q -f "$W/dirty-v5-wrap.img" -o dirty-v5-wrap.img.zst
zstd -19 --long -q -f "$W/dirty-v5-lsn.img" -o dirty-v5-lsn.img.zst
ls -l dirty-*.zst
cat dirty-*.log.txt
