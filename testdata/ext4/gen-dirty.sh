#!/bin/bash
# Regenerates the crash-consistent ext4 fixture: a filesystem the kernel left with a journal
# that needs recovery, as a snapshot of a running VM leaves it. Needs root, e2fsprogs
# (mkfs.ext4, dumpe2fs), xfsprogs (xfs_io: its `shutdown -f` is the same ioctl ext4 has,
# EXT4_IOC_SHUTDOWN with the log-flush flag), util-linux (loop mounts), zstd, sha256sum.
#
#  ext4-dirty.img.zst  ext4 (default features), 4 KiB blocks, 32 MiB: a first tree, unmount
#     and mount again, then new folders with files (one of 2 MB), a renamed file, a deleted
#     file, a file grown and one truncated, a symlink, 300 files in a new folder, `sync`, two
#     changes without a sync; `xfs_io -x -c "shutdown -f"` (the journal is committed to disk,
#     nothing is checkpointed), unmount.
#  ext4-dirty.tsv  the oracle: what the kernel shows after mounting a SECOND copy (it
#     replays the journal): kind path size sha256, hashed from that mount, never from flr.
#  ext4-dirty.dumpe2fs.txt  dumpe2fs -h of the dirty image (needs_recovery is set).
set -euo pipefail
cd "$(dirname "$0")"
. ../dirty-lib.sh

# The kernel's view of IMG after its log replay, from a copy.
oracle() { # IMG OUT
  cp --sparse=always "$1" "$W/copy.img"
  mount -o loop "$W/copy.img" "$M"
  manifest "$M" "$2"
  umount "$M"
  rm -f "$W/copy.img"
}


I=$W/ext4-dirty.img
truncate -s 32M "$I"
mkfs.ext4 -q -F -b 4096 -U 5e3f4051-7c8d-4e9f-a0b1-c2d3e4f50617 -L ext4dirty "$I"
mount -o loop "$I" "$M"
first_tree ubuntu-vm-01
umount "$M"
mount -o loop "$I" "$M"
changes 'hello from the journal'
xfs_io -x -c "shutdown -f" "$M"
umount "$M"
dumpe2fs -h "$I" 2>/dev/null > ext4-dirty.dumpe2fs.txt
grep -q needs_recovery ext4-dirty.dumpe2fs.txt || { echo "the journal does not need recovery"; exit 1; }
oracle "$I" ext4-dirty.tsv
zstd -19 --long -q -f "$I" -o ext4-dirty.img.zst
ls -l ext4-dirty.img.zst
