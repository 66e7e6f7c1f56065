#!/bin/bash
# Regenerates the POSIX fidelity fixtures: one small ext4, XFS and Btrfs image each, filled
# through a kernel loop mount (as root) with setfattr/setfacl/chown/chmod/truncate/dd/fallocate/
# touch. Needs e2fsprogs, xfsprogs, btrfs-progs, attr (setfattr, getfattr), acl (setfacl,
# getfacl), coreutils, util-linux (fallocate, mount), python3, zstd. Every expected value is
# read back from the kernel mount (after a remount with the page cache dropped) with getfattr,
# getfacl and stat, never from flr.
#
#  ext4.img.zst   16 MiB, 4 KiB blocks, 256-byte inodes (in-inode xattrs), no ea_inode
#  xfs.img.zst    40 MiB, v5 (crc=1), 4 KiB blocks, one AG
#  btrfs.img.zst  128 MiB, single device
#  Each holds, at its top level:
#    plain.txt   user.comment, user.bin (binary), trusted.t1, security.s1 (short form / in-inode)
#    acl.txt     an access ACL with named user 1234 and group 2345 (mask rw-)
#    acldir/     an access and a default ACL; acldir/inner.txt (inherits the default ACL)
#    big.txt     user.big: a 3000-byte value (ext4: external xattr block; XFS: leaf form)
#    remote.txt  (XFS only) user.huge: 20000 bytes (remote value blocks)
#    many.txt    (XFS only) 300 attributes user.a000..a299 of 40 bytes (node form: several leaves)
#    suid        mode 4755 owned by 1001:1002     sgid  mode 2755 owned by 0:1003
#    owned.txt   mode 0640 owned by 1234:5678
#    sparse.bin  8 MiB: 4 KiB of data at 1 MiB and at 5 MiB, the rest holes (truncate + dd seek)
#    prealloc.bin 2 MiB fallocate'd (unwritten), the first 4 KiB then written
#    times.txt   mtime 2001-02-03 04:05:06.123456789 UTC, atime 1999-12-31 23:59:58.5 UTC
#  and beside each:
#    FS.getfattr  getfattr -R -d -m- --absolute-names -e hex . (run in the mount, sorted per file)
#    FS.getfacl   getfacl -R -n -p . (run in the mount)
#    FS.stat      stat --format='%n|%f|%u|%g|%s|%b|%.9X|%.9Y|%.9W' of every object (one a line)
set -euo pipefail
cd "$(dirname "$0")"
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1 TZ=UTC
W=$(mktemp -d)
M=$W/mnt
cleanup() {
  mountpoint -q "$M" 2>/dev/null && umount "$M"
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$M"

fill() { # FS
  local fs=$1
  cd "$M"
  echo hello > plain.txt
  setfattr -n user.comment -v "restored with its xattrs" plain.txt
  setfattr -n user.bin -v 0x00ff10e2 plain.txt
  setfattr -n trusted.t1 -v trust plain.txt
  setfattr -n security.s1 -v sec plain.txt
  echo acl > acl.txt
  chmod 0640 acl.txt
  setfacl -m u:1234:rw-,g:2345:r-- acl.txt
  mkdir acldir
  setfacl -m u:1234:rwx acldir
  setfacl -d -m u:1234:r-x,g:2345:rwx acldir
  echo inner > acldir/inner.txt
  echo big > big.txt
  setfattr -n user.big -v "0x$(python3 -c 'print(bytes((i*7+3)%256 for i in range(3000)).hex())')" big.txt
  if [ "$fs" = xfs ]; then
    echo remote > remote.txt
    setfattr -n user.huge -v "0x$(python3 -c 'print(bytes((i*13+1)%256 for i in range(20000)).hex())')" remote.txt
    echo many > many.txt
    for i in $(seq 0 299); do
      setfattr -n "user.a$(printf %03d "$i")" -v "value-$(printf %034d "$i")" many.txt
    done
  fi
  echo suid > suid; chown 1001:1002 suid; chmod 4755 suid
  echo sgid > sgid; chown 0:1003 sgid; chmod 2755 sgid
  echo owned > owned.txt; chown 1234:5678 owned.txt; chmod 0640 owned.txt
  truncate -s 8M sparse.bin
  python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*31+7)%251 for i in range(4096)))' > "$W/blk"
  dd if="$W/blk" of=sparse.bin bs=4096 seek=256 conv=notrunc status=none
  dd if="$W/blk" of=sparse.bin bs=4096 seek=1280 conv=notrunc status=none
  fallocate -l 2M prealloc.bin
  dd if="$W/blk" of=prealloc.bin bs=4096 count=1 conv=notrunc status=none
  echo times > times.txt
  touch -m -d '2001-02-03 04:05:06.123456789' times.txt
  touch -a -d '1999-12-31 23:59:58.5' times.txt
  cd - >/dev/null
  sync
}

expect() { # FS IMG
  local fs=$1 img=$2
  umount "$M"
  echo 3 > /proc/sys/vm/drop_caches
  mount -o loop,ro,noatime "$img" "$M"
  (cd "$M" && getfattr -R -d -m- --absolute-names -e hex . 2>/dev/null) > "$fs.getfattr"
  (cd "$M" && getfacl -R -n -p . 2>/dev/null) > "$fs.getfacl"
  (cd "$M" && find . -mindepth 1 \( -name lost+found -prune -o -print \) | LC_ALL=C sort |
     xargs stat --format='%n|%f|%u|%g|%s|%b|%.9X|%.9Y|%.9W') > "$fs.stat"
  umount "$M"
}

# ---- ext4 ------------------------------------------------------------------------------------
truncate -s 16M "$W/ext4.img"
mkfs.ext4 -q -F -b 4096 -I 256 -O ^metadata_csum_seed -U 1f1d0e1a-2b3c-4d5e-8f70-0a1b2c3d4e5f \
  -E lazy_itable_init=0,lazy_journal_init=0 -L fidelity "$W/ext4.img"
mount -o loop "$W/ext4.img" "$M"
fill ext4
expect ext4 "$W/ext4.img"

# ---- XFS -------------------------------------------------------------------------------------
truncate -s 40M "$W/xfs.img"
mkfs.xfs -q -f -m crc=1,uuid=2e2d1f0b-3c4d-4e5f-9a81-1b2c3d4e5f60 -d agcount=1 -L fidelity "$W/xfs.img"
mount -o loop "$W/xfs.img" "$M"
fill xfs
expect xfs "$W/xfs.img"

# ---- Btrfs -----------------------------------------------------------------------------------
truncate -s 128M "$W/btrfs.img"
mkfs.btrfs -q -f -U 3f3e2a1c-4d5e-4f60-8b92-2c3d4e5f6071 -L fidelity "$W/btrfs.img"
mount -o loop "$W/btrfs.img" "$M"
fill btrfs
expect btrfs "$W/btrfs.img"

for fs in ext4 xfs btrfs; do
  zstd -q -19 -f "$W/$fs.img" -o "$fs.img.zst"
done
ls -l ./*.zst
