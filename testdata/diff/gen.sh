#!/bin/bash
# Fixtures for `flr diff` and `verify --since`: for each of ext4, XFS and
# NTFS, a filesystem in a fixed VHD (<fs>-old.vhd.zst), and a copy of it
# changed by the kernel (ext4, XFS: loop mount) or ntfs-3g (NTFS)
# (<fs>-new.vhd.zst): a file added, one deleted, one renamed, one appended
# to, one rewritten in place, one truncated, a mode and a timestamp
# changed. <fs>.expected.tsv is the change list this script made:
#   change <TAB> path <TAB> former path (renames) <TAB> a field that must be among the differences
# Needs root (loop mounts), e2fsprogs, xfsprogs, ntfs-3g, qemu-img, zstd.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'umount -q "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/mnt"
export TZ=UTC

populate() { # $1: mount point
  local m=$1
  mkdir -p "$m/dir" "$m/keep/deep"
  for i in $(seq 1 20); do
    head -c $((i * 3000)) /dev/urandom >"$m/keep/deep/f$i.bin"
  done
  echo "stays" >"$m/keep/same.txt"
  echo "to be removed" >"$m/gone.txt"
  echo "old name" >"$m/dir/old-name.txt"
  echo "line 1" >"$m/append.log"
  head -c 200000 /dev/urandom >"$m/rewrite.bin"
  head -c 50000 /dev/urandom >"$m/trunc.bin"
  echo "mode" >"$m/mode.txt"
  echo "time" >"$m/time.txt"
  touch -d "2024-01-02 03:04:05" "$m"/*.txt "$m"/*.log "$m"/*.bin "$m/dir/old-name.txt"
  touch -d "2024-01-02 03:04:05" "$m/dir" "$m/keep"
}

change() { # $1: mount point, $2: whether modes are kept
  local m=$1
  sleep 1.1
  echo "new file" >"$m/new.txt"
  rm "$m/gone.txt"
  mv "$m/dir/old-name.txt" "$m/dir/new-name.txt"
  echo "line 2" >>"$m/append.log"
  dd if=/dev/urandom of="$m/rewrite.bin" bs=4096 seek=10 count=2 conv=notrunc status=none
  truncate -s 1000 "$m/trunc.bin"
  [ "$2" = modes ] && chmod 0600 "$m/mode.txt"
  touch -m -d "2025-05-06 07:08:09" "$m/time.txt"
  sync
}

expected() { # $1: fs, $2: whether modes are kept
  {
    printf 'added\t/new.txt\t\t\n'
    printf 'removed\t/gone.txt\t\t\n'
    printf 'renamed\t/dir/new-name.txt\t/dir/old-name.txt\t\n'
    printf 'changed\t/dir\t\tmtime\n'
    printf 'changed\t/append.log\t\tcontent\n'
    printf 'changed\t/rewrite.bin\t\tcontent\n'
    printf 'changed\t/trunc.bin\t\tsize\n'
    [ "$2" = modes ] && printf 'changed\t/mode.txt\t\tmode\n'
    printf 'changed\t/time.txt\t\tmtime\n'
  } >"$1.expected.tsv"
}

to_vhd() { # raw image, output name
  qemu-img convert -f raw -O vpc -o subformat=fixed "$1" "$work/out.vhd"
  zstd -q -19 -f "$work/out.vhd" -o "$2.vhd.zst"
}

for fs in ext4 xfs; do
  img=$work/$fs.img
  if [ $fs = ext4 ]; then
    truncate -s 24M "$img"
    mkfs.ext4 -q -F -b 4096 -U 0d1ff000-0000-4000-8000-000000000004 -L diff "$img"
  else
    truncate -s 300M "$img"
    mkfs.xfs -q -f -m uuid=0d1ff000-0000-4000-8000-000000000005 -L diff "$img"
  fi
  mount -o loop "$img" "$work/mnt"
  populate "$work/mnt"
  umount "$work/mnt"
  to_vhd "$img" "$fs-old"
  mount -o loop "$img" "$work/mnt"
  change "$work/mnt" modes
  umount "$work/mnt"
  to_vhd "$img" "$fs-new"
  expected $fs modes
done

img=$work/ntfs.img
truncate -s 24M "$img"
mkntfs -q -F -f -L diff "$img" >/dev/null
ntfs-3g "$img" "$work/mnt"
populate "$work/mnt"
umount "$work/mnt"
to_vhd "$img" ntfs-old
ntfs-3g "$img" "$work/mnt"
change "$work/mnt" nomodes
umount "$work/mnt"
to_vhd "$img" ntfs-new
expected ntfs nomodes
ls -l ./*.zst
