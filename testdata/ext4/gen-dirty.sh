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
W=$(mktemp -d)
M=$W/mnt
cleanup() { mountpoint -q "$M" 2>/dev/null && umount "$M"; rm -rf "$W"; }
trap cleanup EXIT
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

I=$W/ext4-dirty.img
truncate -s 32M "$I"
mkfs.ext4 -q -F -b 4096 -U 5e3f4051-7c8d-4e9f-a0b1-c2d3e4f50617 -L ext4dirty "$I"
mount -o loop "$I" "$M"
mkdir -p "$M/etc" "$M/home/azure" "$M/var/log"
printf 'ubuntu-vm-01\n' > "$M/etc/hostname"
data 10000 1 > "$M/home/azure/grow.bin"
data 300000 2 > "$M/home/azure/shrink.bin"
printf 'to be renamed\n' > "$M/home/azure/old-name.txt"
printf 'to be deleted\n' > "$M/home/azure/doomed.txt"
data 5000 3 > "$M/var/log/syslog"
umount "$M"
mount -o loop "$I" "$M"
mkdir -p "$M/new/deeper"
data 2000000 4 > "$M/new/two-megabytes.bin"
printf 'hello from the journal\n' > "$M/new/deeper/note.txt"
mv "$M/home/azure/old-name.txt" "$M/home/azure/new-name.txt"
rm "$M/home/azure/doomed.txt"
data 70000 5 >> "$M/home/azure/grow.bin"
truncate -s 4097 "$M/home/azure/shrink.bin"
ln -s ../etc/hostname "$M/new/hostlink"
mkdir "$M/many"
for i in $(seq 1 300); do printf 'file %d\n' "$i" > "$M/many/f$(printf %04d "$i")"; done
data 3000 6 >> "$M/var/log/syslog"
sync
printf 'never synced\n' > "$M/new/unsynced.txt"
mkdir "$M/new/empty-after-sync"
xfs_io -x -c "shutdown -f" "$M"
umount "$M"
dumpe2fs -h "$I" 2>/dev/null > ext4-dirty.dumpe2fs.txt
grep -q needs_recovery ext4-dirty.dumpe2fs.txt || { echo "the journal does not need recovery"; exit 1; }
oracle "$I" ext4-dirty.tsv
zstd -19 --long -q -f "$I" -o ext4-dirty.img.zst
ls -l ext4-dirty.img.zst
