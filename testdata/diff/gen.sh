#!/bin/bash
# Fixtures for `flr diff` and `verify --since`: for each of ext4, XFS,
# NTFS, Btrfs and FAT, a filesystem in a fixed VHD (<fs>-old.vhd.zst), and a
# copy of it changed by the kernel (ext4, XFS, Btrfs: loop mount), ntfs-3g
# (NTFS) or mtools (FAT)
# (<fs>-new.vhd.zst): a file added, one deleted, one renamed, one appended
# to, one rewritten in place, one truncated, a mode and a timestamp
# changed. <fs>.expected.tsv is the change list this script made:
#   change <TAB> path <TAB> former path (renames) <TAB> a field that must be among the differences
# FAT has no file ids, so its rename is a removal and an addition, and no
# modes; the FAT pair is made with mtools (see below). `./gen.sh btrfs fat` remakes only those pairs (default: all five),
# `./gen.sh child` only the differencing children (from the committed pairs;
# ext4 also as a VHDX parent and child).
# Needs root (loop mounts), e2fsprogs, xfsprogs, btrfs-progs, dosfstools,
# ntfs-3g, mtools, qemu-img, libvhdi-utils, python3, zstd, util-linux
# (fallocate, losetup), xfsprogs (xfs_io), lvm2 and thin-provisioning-tools
# (thin).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
loop=
trap 'umount -q "$work/inner-mnt" 2>/dev/null || true; umount -q "$work/mnt" 2>/dev/null || true; [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/mnt"
export TZ=UTC

populate() { # $1: mount point, $2: "many" for 400 more small files
  local m=$1
  mkdir -p "$m/dir" "$m/keep/deep"
  for i in $(seq 1 20); do
    head -c $((i * 3000)) /dev/urandom >"$m/keep/deep/f$i.bin"
  done
  if [ "${2:-}" = many ]; then
    # Btrfs keeps many inodes in one 16 KiB leaf: enough of them that
    # most leaves hold only untouched ones.
    mkdir -p "$m/keep/many"
    for i in $(seq 1 400); do echo "small $i" >"$m/keep/many/s$i.txt"; done
    touch -d "2024-01-02 03:04:05" "$m/keep/many"
  fi
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

expected() { # $1: fs, $2: whether modes are kept, $3: ids (renames are proven) or noids
  {
    printf 'added\t/new.txt\t\t\n'
    printf 'removed\t/gone.txt\t\t\n'
    if [ "${3:-ids}" = ids ]; then
      printf 'renamed\t/dir/new-name.txt\t/dir/old-name.txt\t\n'
    else
      printf 'added\t/dir/new-name.txt\t\t\n'
      printf 'removed\t/dir/old-name.txt\t\t\n'
    fi
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

targets=${*:-ext4 xfs ntfs btrfs fat nested thin}
want() { case " $targets " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ext4 and XFS can shift a file's extents (fallocate --collapse-range),
# Btrfs clone one (xfs_io reflink): shift.bin starts as a hole then one
# 4 KiB block, and ends as that block (not moved on the volume, not
# rewritten) then a hole, the same size: the same data ranges, other bytes.
shift_make() { # $1: mount point
  head -c 4096 /dev/urandom | dd of="$1/shift.bin" bs=4096 seek=1 status=none
  touch -d "2024-01-02 03:04:05" "$1/shift.bin"
}
shift_change() { # $1: mount point, $2: the expected list to add to, $3: fs
  if [ "${3:-}" = btrfs ]; then
    # Btrfs cannot collapse a range; the block is cloned to the front of
    # the file (the same extent, shared) and the old place punched out.
    xfs_io -c "reflink $1/shift.bin 4096 0 4096" -c "fpunch 4096 4096" "$1/shift.bin"
  else
    fallocate --collapse-range -o 0 -l 4096 "$1/shift.bin"
    truncate -s 8192 "$1/shift.bin"
  fi
  sync
  printf 'changed\t/shift.bin\t\tcontent\n' >>"$2"
}

kernel_pair() { # $1: fs, $2: modes or nomodes, $3: ids or noids, $4: populate's "many"
  local fs=$1 img=$work/$1.img
  mount -o loop "$img" "$work/mnt"
  populate "$work/mnt" "${4:-}"
  case $fs in ext4 | xfs | btrfs) shift_make "$work/mnt" ;; esac
  umount "$work/mnt"
  to_vhd "$img" "$fs-old"
  mount -o loop "$img" "$work/mnt"
  change "$work/mnt" "$2"
  expected "$fs" "$2" "$3"
  case $fs in ext4 | xfs | btrfs) shift_change "$work/mnt" "$fs.expected.tsv" $fs ;; esac
  umount "$work/mnt"
  to_vhd "$img" "$fs-new"
}

for fs in ext4 xfs; do
  want $fs || continue
  img=$work/$fs.img
  if [ $fs = ext4 ]; then
    truncate -s 24M "$img"
    mkfs.ext4 -q -F -b 4096 -U 0d1ff000-0000-4000-8000-000000000004 -L diff "$img"
  else
    truncate -s 300M "$img"
    mkfs.xfs -q -f -m uuid=0d1ff000-0000-4000-8000-000000000005 -L diff "$img"
  fi
  kernel_pair $fs modes ids
done

if want btrfs; then
  img=$work/btrfs.img
  truncate -s 128M "$img"
  mkfs.btrfs -q -f -U 0d1ff000-0000-4000-8000-000000000006 -L diff "$img"
  kernel_pair btrfs modes ids many
fi

if want fat; then
  # This kernel has no vfat driver and fusefat mis-stores months, so the
  # FAT pair is made with mtools: files copied with their times (mcopy -m)
  # from a staging tree the shell made; an in-place rewrite written over
  # the file's own clusters (where mshowfat puts them, nothing else
  # touched); an append, a truncation and a new time as a copy over the
  # file (mcopy -o). mtools does not touch a folder's time when its
  # entries change, so /dir keeps its time. FAT has no modes.
  img=$work/fat.img
  # FAT16, 4 KiB clusters: one 4 KiB block of the FAT maps 8 MiB of data.
  # keep/ is copied first, with 8 MiB of zeros after its files, so that
  # its FAT entries share no block with the files changed later (FAT
  # entries are dense: one allocation anywhere in a block changes it).
  truncate -s 64M "$img"
  mkfs.fat -F 16 -s 8 -S 512 -i 0d1ff007 -n DIFF "$img" >/dev/null
  st=$work/stage
  mkdir -p "$st"
  populate "$st"
  head -c 8M /dev/zero >"$st/keep/spacer.bin"
  touch -d "2024-01-02 03:04:05" "$st/keep/spacer.bin" "$st/keep"
  export MTOOLS_SKIP_CHECK=1
  mcopy -s -m -i "$img" "$st/keep" ::/
  for f in "$st"/*; do
    [ "$f" = "$st/keep" ] || mcopy -s -m -i "$img" "$f" ::/
  done
  to_vhd "$img" fat-old
  sleep 1.1
  echo "new file" >"$st/new.txt"
  mcopy -m -i "$img" "$st/new.txt" ::/new.txt
  mdel -i "$img" ::/gone.txt
  mren -i "$img" ::/dir/old-name.txt ::/dir/new-name.txt
  echo "line 2" >>"$st/append.log"
  mcopy -o -m -i "$img" "$st/append.log" ::/append.log
  # Bytes 40960..49151 of rewrite.bin, cluster by cluster (4 KiB
  # clusters; the data area follows the reserved sectors, both FATs and
  # the root folder's 512 entries).
  geo=$(minfo -i "$img" ::)
  rsv=$(sed -n 's/^reserved (boot) sectors: //p' <<<"$geo")
  fatlen=$(sed -n 's/^sectors per fat: //p' <<<"$geo")
  nfats=$(sed -n 's/^fats: //p' <<<"$geo")
  rootsec=$(( $(sed -n 's/^max available root directory slots: //p' <<<"$geo") * 32 / 512 ))
  for off in 40960 45056; do
    c=$(mshowfat -i "$img" -o "$off" ::/rewrite.bin | awk '{print $NF}')
    dd if=/dev/urandom of="$img" bs=512 seek=$((rsv + nfats * fatlen + rootsec + (c - 2) * 8)) count=8 conv=notrunc status=none
  done
  truncate -s 1000 "$st/trunc.bin"
  mcopy -o -m -i "$img" "$st/trunc.bin" ::/trunc.bin
  touch -m -d "2025-05-06 07:08:09" "$st/time.txt"
  mcopy -o -m -i "$img" "$st/time.txt" ::/time.txt
  to_vhd "$img" fat-new
  {
    printf 'added\t/new.txt\t\t\n'
    printf 'removed\t/gone.txt\t\t\n'
    printf 'added\t/dir/new-name.txt\t\t\n'
    printf 'removed\t/dir/old-name.txt\t\t\n'
    printf 'changed\t/append.log\t\tcontent\n'
    printf 'changed\t/rewrite.bin\t\tcontent\n'
    printf 'changed\t/trunc.bin\t\tsize\n'
    printf 'changed\t/time.txt\t\tmtime\n'
  } >fat.expected.tsv
fi

if want ntfs; then
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
fi
# A disk image stored as a file (an FSLogix profile disk on a file
# server): nested-old.vhd is an ext4 volume holding /images/inner.vhd, a
# fixed VHD of an ext4 volume populated as above; nested-new.vhd is a copy
# in which the kernel changed the inner volume through a loop device on the
# outer volume's file (so the file's blocks stay where they were, and
# the inner changes are all that changed). nested.expected.tsv is the
# inner volume's change list.
if want nested; then
  img=$work/nested.img inner=$work/inner.img
  truncate -s 16M "$inner"
  mkfs.ext4 -q -F -b 4096 -U 0d1ff000-0000-4000-8000-000000000008 -L inner "$inner"
  mount -o loop "$inner" "$work/mnt"
  populate "$work/mnt"
  umount "$work/mnt"
  qemu-img convert -f raw -O vpc -o subformat=fixed "$inner" "$work/inner.vhd"
  truncate -s 40M "$img"
  mkfs.ext4 -q -F -b 4096 -U 0d1ff000-0000-4000-8000-000000000009 -L outer "$img"
  mount -o loop "$img" "$work/mnt"
  mkdir "$work/mnt/images"
  cp --sparse=never "$work/inner.vhd" "$work/mnt/images/inner.vhd"
  echo "outer" >"$work/mnt/outer.txt"
  touch -d "2024-01-02 03:04:05" "$work/mnt/images/inner.vhd" "$work/mnt/outer.txt" "$work/mnt/images"
  umount "$work/mnt"
  to_vhd "$img" nested-old
  mount -o loop "$img" "$work/mnt"
  mkdir -p "$work/inner-mnt"
  mount -o loop "$work/mnt/images/inner.vhd" "$work/inner-mnt"
  change "$work/inner-mnt" modes
  umount "$work/inner-mnt"
  umount "$work/mnt"
  to_vhd "$img" nested-new
  expected nested modes ids
fi

# An ext4 volume on an LVM thin LV (thin-old/new.vhd): the ext4 pair's two
# volumes (changed by the kernel) laid out in a thin pool by thin.py, the
# newer with its changed 64 KiB blocks written as dm-thin writes them (in
# place, or copied on write to a fresh data block). lvcreate
# (--driverloaded n) makes the PV and two linear LVs, vgcfgrestore writes
# thin.py's VG text, thin_restore/thin_check the pool metadata. There is no
# device-mapper here, so the kernel cannot write through the thin LV
# itself. thin.expected.tsv is the ext4 pair's list.
if want thin; then
  . ../lvm/nodm.sh
  for v in old new; do
    zstd -qdf "ext4-$v.vhd.zst" -o "$work/ext4-$v.vhd"
    qemu-img convert -f vpc -O raw "$work/ext4-$v.vhd" "$work/ext4-$v.raw"
    # The volume is 24 MiB; the VHD's geometry adds a few zero sectors.
    truncate -s 24M "$work/ext4-$v.raw"
  done
  truncate -s 40M "$work/thin.img"
  loop=$(losetup -f --show "$work/thin.img")
  pool_parts "$loop" thindiff dddddd-1111-2222-3333-4444-5555-dddddd 32M "$work/vg.txt"
  python3 thin.py "$work/vg.txt" "$work/ext4-old.raw" "$work/ext4-new.raw" "$work"
  lvm_ vgcfgrestore -q --force -f "$work/vg-thin.txt" thindiff
  pe_start=$(lvm_ pvs --noheadings --units b --nosuffix -o pe_start "$loop" | tr -d ' ')
  lvm_ vgchange -q -an thindiff >/dev/null 2>&1 || true
  losetup -d "$loop"
  loop=
  for v in old new; do
    cp "$work/thin.img" "$work/thin-$v.img"
    truncate -s 4M "$work/tmeta-$v.img"
    thin_restore -q -i "$work/$v.xml" -o "$work/tmeta-$v.img"
    thin_check -q "$work/tmeta-$v.img"
    dd if="$work/tmeta-$v.img" of="$work/thin-$v.img" bs=1M seek=$((pe_start / 1048576)) conv=notrunc status=none
    dd if="$work/$v-tdata.img" of="$work/thin-$v.img" bs=1M seek=$((pe_start / 1048576 + 4)) conv=notrunc status=none
    to_vhd "$work/thin-$v.img" "thin-$v"
  done
  cp ext4.expected.tsv thin.expected.tsv
fi

# Differencing children: <fs>-child.vhd names <fs>-old.vhd as its parent
# (relative locator) and holds exactly the 4 KiB groups in which <fs>-new
# differs from it (mkchild.py), so `flr diff <fs>-old.vhd <fs>-child.vhd`
# must list <fs>.expected.tsv. libvhdi (vhdimount) reads each child back:
# its virtual disk must be <fs>-new's.
for fs in ext4 ntfs; do
  want child || want $fs || continue
  zstd -qdf "$fs-old.vhd.zst" -o "$work/$fs-old.vhd"
  zstd -qdf "$fs-new.vhd.zst" -o "$work/$fs-new.vhd"
  qemu-img convert -f vpc -O raw "$work/$fs-old.vhd" "$work/$fs-old.raw"
  qemu-img convert -f vpc -O raw "$work/$fs-new.vhd" "$work/$fs-new.raw"
  python3 mkchild.py "$work/$fs-old.vhd" "$work/$fs-old.raw" "$work/$fs-new.raw" "$work/$fs-child.vhd"
  mkdir -p "$work/vhdi"
  vhdimount "$work/$fs-child.vhd" "$work/vhdi" >/dev/null
  last=$(ls "$work/vhdi" | sort -V | tail -1)
  got=$(sha256sum <"$work/vhdi/$last" | cut -d' ' -f1)
  fusermount -u "$work/vhdi" 2>/dev/null || umount "$work/vhdi"
  want_sha=$(sha256sum <"$work/$fs-new.raw" | cut -d' ' -f1)
  [ "$got" = "$want_sha" ] || { echo "$fs-child.vhd: libvhdi reads $got, $fs-new is $want_sha" >&2; exit 1; }
  zstd -q -19 -f "$work/$fs-child.vhd" -o "$fs-child.vhd.zst"
  # ext4 also as a VHDX chain: the older disk as a dynamic VHDX by qemu-img
  # (1 MiB blocks), its child by mkdiff.py's VHDX writer, read back the same way.
  if [ $fs = ext4 ]; then
    qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$work/$fs-old.raw" "$work/$fs-old.vhdx"
    python3 mkchild.py "$work/$fs-old.vhdx" "$work/$fs-old.raw" "$work/$fs-new.raw" "$work/$fs-child.vhdx"
    vhdimount "$work/$fs-child.vhdx" "$work/vhdi" >/dev/null
    last=$(ls "$work/vhdi" | sort -V | tail -1)
    got=$(sha256sum <"$work/vhdi/$last" | cut -d' ' -f1)
    fusermount -u "$work/vhdi" 2>/dev/null || umount "$work/vhdi"
    [ "$got" = "$want_sha" ] || { echo "$fs-child.vhdx: libvhdi reads $got, $fs-new is $want_sha" >&2; exit 1; }
    zstd -q -19 -f "$work/$fs-old.vhdx" -o "$fs-old.vhdx.zst"
    zstd -q -19 -f "$work/$fs-child.vhdx" -o "$fs-child.vhdx.zst"
  fi
  rm -f "$work/$fs"-*.raw "$work/$fs"-*.vhd "$work/$fs"-*.vhdx
done
ls -l ./*.zst
