#!/bin/bash
# Regenerates the Btrfs fixtures. Needs btrfs-progs (mkfs.btrfs, btrfs), util-linux (losetup,
# mount, as root: the kernel's Btrfs fills the images), gdisk (sgdisk), dosfstools (mkfs.vfat),
# qemu-img, python3, zstd. Expected values come from the kernel mount (read back after a
# remount with the page cache dropped) or from btrfs-progs, never from flr.
#
#  features.img.zst  128 MiB, single device, xxhash64 checksums, 4 KiB sectors, 16 KiB nodes:
#        from-mkfs/ (written by mkfs.btrfs --rootdir: a hard link, a symlink, an empty folder),
#        zlib.txt / lzo.txt (written with compress=zlib / compress=lzo), zstd.bin (with
#        compress-force=zstd), inline-2048 (exactly max_inline: inline), inline-2049 (one byte
#        more: a regular extent), inline-zstd (3000 compressible bytes, inline compressed),
#        holes.bin (data, hole, data, trailing hole), prealloc.bin (fallocate: unwritten, then
#        half written), reflink.bin (cp --reflink of zstd.bin), partial.bin (FICLONERANGE of
#        the middle of lzo.txt into a plain file: extents that start inside another),
#        nocow.bin (chattr +C: no data checksums), dir2000/ (2000 entries: several leaves),
#        links/short, links/long (1000 bytes), xattrs on xattr.txt, subvolumes sub (with
#        sub/nested), a read-only snapshot snap of sub (sub/nested shows as an empty folder
#        there), default subvolume set to sub.
#        features.tsv (manifest from the mount, paths from the top level), features.xattrs.tsv,
#        features.subvols.tsv (id, path, ro, uuid, parent uuid: btrfs subvolume list),
#        features.default (btrfs subvolume get-default).
#  log.img.zst  the same kind of filesystem copied while mounted right after an fsync, so its
#        superblock carries an unreplayed tree log: committed.txt is in the last commit,
#        fsynced.txt only in the log. log.tsv lists committed.txt.
#  raid5-{1,2,3}.img.zst       data and metadata RAID5 over 3 devices, crc32c.
#  raid6-{1,2,3,4}.img.zst     data and metadata RAID6 over 4 devices, sha256.
#  raid1c4-{1,2,3,4}.img.zst   data and metadata RAID1C4 over 4 devices, blake2b.
#        Each 128 MiB; raid.tsv is the manifest they share (the same files on each).
#  suse.vhd.zst  an openSUSE-style disk as a fixed VHD: GPT, an 8 MiB EFI FAT partition, a
#        Btrfs root partition with @, @/home, @/var, @/.snapshots, snapper-style snapshots
#        @/.snapshots/1/snapshot (read-write, the default subvolume, as the installer leaves
#        it) and @/.snapshots/2/snapshot (read-only, taken after /etc/motd changed), each with
#        its info.xml. suse.tsv (manifest from the top level), suse.subvols.tsv,
#        suse.default, suse.part (the Btrfs partition's byte offset and size in the disk).
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
M=$W/mnt
LOOPS=()
cleanup() {
  mountpoint -q "$M" 2>/dev/null && umount "$M"
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  btrfs device scan --forget >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$M"

data() { # SEED SIZE [compressible]: deterministic bytes on stdout
  python3 - "$@" <<'PY'
import sys, random
seed, size = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
if len(sys.argv) > 3:
    words = [b"btrfs", b"extent", b"chunk", b"subvolume", b"snapshot", b"flr", b"restore", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += r.choice(words) + b" "
    sys.stdout.buffer.write(bytes(out[:size]))
else:
    sys.stdout.buffer.write(r.randbytes(size))
PY
}

# manifest MOUNT OUT: every object below MOUNT (subvolumes as folders), read through the mount.
manifest() {
  (cd "$1" && find . -mindepth 1 \( -type f -o -type l -o -type d \) | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}

subvols() { # MOUNT OUT
  btrfs subvolume list -a -u -q "$1" | python3 -c '
import sys, subprocess
ro = set(l.split()[1] for l in subprocess.run(["btrfs", "subvolume", "list", "-a", "-r", sys.argv[1]], capture_output=True, text=True).stdout.splitlines())
for l in sys.stdin:
    import re
    d = dict(re.findall(r"(ID|parent_uuid|uuid) (\S+)", l))
    path = l.split(" path ", 1)[1].strip().removeprefix("<FS_TREE>/")
    print("\t".join([d["ID"], path, "1" if d["ID"] in ro else "0", d["uuid"], d["parent_uuid"]]))
' "$1" > "$2"
}

remount_ro() { # IMG-or-DEV [opts]
  umount "$M"; sync; echo 3 > /proc/sys/vm/drop_caches
  mount -o ro,subvolid=5${2:+,$2} "$1" "$M"
}

# ---- features.img ------------------------------------------------------------------------
gen_features() {
rm -f features.img.zst
truncate -s 128M "$W/features.img"
# The files under /from-mkfs are written by btrfs-progs itself (mkfs.btrfs --rootdir), the
# rest by the kernel.
R=$W/rootdir/from-mkfs
mkdir -p "$R/etc" "$R/usr/lib" "$R/empty"
printf 'sles-vm-01\n' > "$R/etc/hostname"
data 40 300000 > "$R/usr/lib/blob.bin"
data 41 50000 c > "$R/usr/lib/words.txt"
ln "$R/etc/hostname" "$R/etc/hostname.hardlink"
ln -s etc/hostname "$R/hostname.link"
mkfs.btrfs -q -f --csum xxhash -L flr-features -U 6c1f0a52-3b8e-4d07-9a1e-5f2b7c9d0e11 \
  --rootdir "$W/rootdir" "$W/features.img"
mount -o loop,compress=zlib "$W/features.img" "$M"
data 1 300000 c > "$M/zlib.txt"; sync
mount -o remount,compress=lzo "$M"
data 2 400000 c > "$M/lzo.txt"; sync
mount -o remount,compress-force=zstd "$M"
data 3 262144 > "$M/zstd.bin"            # random: compress-force still writes it, mostly raw
data 4 3000 c > "$M/inline-zstd"; sync
mount -o remount,compress=no,max_inline=2048 "$M"
data 5 2048 > "$M/inline-2048"
data 6 2049 > "$M/inline-2049"
{ data 7 65536; head -c 196608 /dev/zero | tr '\0' '\0' >/dev/null; } > "$M/holes.bin"
python3 - "$M/holes.bin" <<'PY'
import sys, random
r = random.Random(8)
with open(sys.argv[1], "r+b") as f:
    f.seek(262144); f.write(r.randbytes(12288))
    f.truncate(1 << 20)
PY
fallocate -l 1M "$M/prealloc.bin"
python3 - "$M/prealloc.bin" <<'PY'
import sys, random
with open(sys.argv[1], "r+b") as f:
    f.seek(4096); f.write(random.Random(9).randbytes(40960))
PY
cp --reflink=always "$M/zstd.bin" "$M/reflink.bin"
python3 - "$M/lzo.txt" "$M/partial.bin" <<'PY'
import sys, os, fcntl, struct
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT, 0o644)
os.write(dst, b"P" * 8192)
FICLONERANGE = 0x4020940d
# clone 128 KiB from 64 KiB into the source to 8 KiB into the destination
fcntl.ioctl(dst, FICLONERANGE, struct.pack("qQQQ", src, 65536, 131072, 8192))
os.close(src); os.close(dst)
PY
touch "$M/nocow.bin"; chattr +C "$M/nocow.bin"; data 10 20000 >> "$M/nocow.bin"
mkdir "$M/dir2000"
for i in $(seq -w 0 1999); do printf 'entry %s\n' "$i" > "$M/dir2000/file-with-a-long-name-$i"; done
mkdir "$M/links"
ln -s ../zlib.txt "$M/links/short"
ln -s "$(python3 -c 'print("/".join("d%03d" % i for i in range(250)), end="")')" "$M/links/long"
printf 'has xattrs\n' > "$M/xattr.txt"
python3 - "$M/xattr.txt" <<'PY'
import os, sys
os.setxattr(sys.argv[1], "user.flr.small", b"value")
os.setxattr(sys.argv[1], "user.flr.binary", bytes(range(256)))
PY
btrfs -q subvolume create "$M/sub"
printf 'in sub\n' > "$M/sub/a.txt"
btrfs -q subvolume create "$M/sub/nested"
printf 'nested\n' > "$M/sub/nested/n.txt"
btrfs -q subvolume snapshot -r "$M/sub" "$M/snap"
printf 'changed after the snapshot\n' > "$M/sub/a.txt"
btrfs subvolume set-default "$M/sub"
sync
remount_ro "$W/features.img"
manifest "$M" features.tsv
subvols "$M" features.subvols.tsv
btrfs subvolume get-default "$M" | awk '{print $2}' > features.default
python3 - "$M" > features.xattrs.tsv <<'PY'
import os, sys
root = sys.argv[1]
for dp, dns, fns in sorted(os.walk(root)):
    for n in sorted(dns + fns):
        p = os.path.join(dp, n)
        for a in sorted(os.listxattr(p, follow_symlinks=False)):
            print(f"{os.path.relpath(p, root)}\t{a}\t{os.getxattr(p, a, follow_symlinks=False).hex()}")
PY
# the compression the kernel used, for the record
btrfs inspect-internal dump-tree -t 5 "$W/features.img" 2>/dev/null | grep -c 'compression [123]' > features.compressed-extents
umount "$M"
zstd -q -19 -f "$W/features.img" -o features.img.zst
}

# ---- log.img: a copy taken after an fsync, before the commit ----------------------------
gen_log() {
rm -f log.img.zst
truncate -s 128M "$W/log.img"
mkfs.btrfs -q -f -L flr-log -U 0e4b6a1c-2d3f-4e5a-8b9c-1d2e3f4a5b6c "$W/log.img"
mount -o loop,commit=300 "$W/log.img" "$M"
data 11 5000 > "$M/committed.txt"
sync
python3 - "$M/fsynced.txt" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"only in the tree log\n" * 10); os.fsync(fd); os.close(fd)
PY
cp --sparse=always "$W/log.img" "$W/log-copy.img"
(cd "$M" && printf 'f\tcommitted.txt\t%s\t%s\n' "$(stat -c %s committed.txt)" "$(sha256sum < committed.txt | cut -d' ' -f1)") > log.tsv
umount "$M"
btrfs inspect-internal dump-super "$W/log-copy.img" | grep -q '^log_root[[:space:]]*[1-9]' || { echo "the copy has no tree log"; exit 1; }
zstd -q -19 -f "$W/log-copy.img" -o log.img.zst
}

# ---- RAID5 / RAID6 / RAID1C4 --------------------------------------------------------------
gen_raid() {
raid() { # NAME PROFILE N CSUM UUID
  local name=$1 prof=$2 n=$3 csum=$4 uuid=$5 devs=() i
  rm -f "$name"-*.img.zst
  for i in $(seq 1 "$n"); do
    truncate -s 128M "$W/$name-$i.img"
    devs+=("$(losetup -f --show "$W/$name-$i.img")")
  done
  LOOPS+=("${devs[@]}")
  mkfs.btrfs -q -f -d "$prof" -m "$prof" --csum "$csum" -L "flr-$name" -U "$uuid" "${devs[@]}" 2>/dev/null
  btrfs device scan "${devs[@]}" >/dev/null
  mount "${devs[0]}" "$M"
  data 20 600000 > "$M/big.bin"             # spans several full stripes
  data 21 70000 > "$M/odd.bin"              # ends inside a stripe
  data 22 200000 c > "$M/text.txt"
  printf 'small\n' > "$M/small.txt"
  mkdir "$M/dir"; for j in $(seq 1 300); do printf '%s\n' "$j" > "$M/dir/f$j"; done
  ln -s small.txt "$M/link"
  sync
  remount_ro "${devs[0]}"
  manifest "$M" "$W/$name.tsv"
  umount "$M"
  for d in "${devs[@]}"; do losetup -d "$d"; done
  LOOPS=()
  btrfs device scan --forget >/dev/null 2>&1 || true
  for i in $(seq 1 "$n"); do zstd -q -19 -f "$W/$name-$i.img" -o "$name-$i.img.zst"; done
}
raid raid5 raid5 3 crc32c 5a5a5a5a-0001-4000-8000-000000000005
raid raid6 raid6 4 sha256 6b6b6b6b-0002-4000-8000-000000000006
raid raid1c4 raid1c4 4 blake2 1c41c41c-0003-4000-8000-000000000004
cmp "$W/raid5.tsv" "$W/raid6.tsv" && cmp "$W/raid5.tsv" "$W/raid1c4.tsv"
cp "$W/raid5.tsv" raid.tsv
}

# ---- openSUSE-style disk --------------------------------------------------------------------
gen_suse() {
rm -f suse.vhd.zst
truncate -s 144M "$W/suse.raw"
sgdisk -o -n 1:2048:+8M -t 1:ef00 -n 2:0:0 -t 2:8300 "$W/suse.raw" >/dev/null
sgdisk -U 11111111-2222-4333-8444-555555555555 -c 1:p.UEFI -u 1:aaaaaaaa-0001-4000-8000-000000000001 \
  -c 2:p.lxroot -u 2:aaaaaaaa-0002-4000-8000-000000000002 "$W/suse.raw" >/dev/null
# No partition device nodes here (no udev): one loop device per partition, by offset.
part() { sgdisk -i "$1" "$W/suse.raw" | awk -v w="$2" '$0 ~ w {print $3}'; }
P1=$(part 1 '^First sector'); E1=$(part 1 '^Last sector'); P2=$(part 2 '^First sector'); E2=$(part 2 '^Last sector')
L1=$(losetup -f --show -o $((P1 * 512)) --sizelimit $(((E1 - P1 + 1) * 512)) "$W/suse.raw"); LOOPS+=("$L1")
L=$(losetup -f --show -o $((P2 * 512)) --sizelimit $(((E2 - P2 + 1) * 512)) "$W/suse.raw"); LOOPS+=("$L")
mkfs.vfat -n EFI -i 12345678 "$L1" >/dev/null
mkfs.btrfs -q -f -L suse-root -U 5e5e5e5e-0004-4000-8000-00000000005e "$L"
mount "$L" "$M"
btrfs -q subvolume create "$M/@"
for s in home var .snapshots; do btrfs -q subvolume create "$M/@/$s"; done
mkdir -p "$M/@/etc" "$M/@/home/geeko" "$M/@/var/log" "$M/@/.snapshots/1" "$M/@/.snapshots/2"
printf 'NAME="openSUSE Leap"\nVERSION="15.6"\nID="opensuse-leap"\n' > "$M/@/etc/os-release"
printf 'Welcome\n' > "$M/@/etc/motd"
printf 'UUID=5e5e5e5e-0004-4000-8000-00000000005e / btrfs defaults 0 0\nUUID=5e5e5e5e-0004-4000-8000-00000000005e /home btrfs subvol=/@/home 0 0\n' > "$M/@/etc/fstab"
printf 'geeko notes\n' > "$M/@/home/geeko/notes.txt"
data 30 100000 c > "$M/@/var/log/messages"
btrfs -q subvolume snapshot "$M/@" "$M/@/.snapshots/1/snapshot"
printf '<?xml version="1.0"?>\n<snapshot>\n  <type>single</type>\n  <num>1</num>\n  <description>first root filesystem</description>\n</snapshot>\n' > "$M/@/.snapshots/1/info.xml"
printf 'Welcome, patched\n' > "$M/@/.snapshots/1/snapshot/etc/motd"
btrfs -q subvolume snapshot -r "$M/@/.snapshots/1/snapshot" "$M/@/.snapshots/2/snapshot"
printf '<?xml version="1.0"?>\n<snapshot>\n  <type>single</type>\n  <num>2</num>\n  <description>after patching motd</description>\n</snapshot>\n' > "$M/@/.snapshots/2/info.xml"
printf 'Welcome, patched twice\n' > "$M/@/.snapshots/1/snapshot/etc/motd"
btrfs subvolume set-default "$M/@/.snapshots/1/snapshot"
sync
remount_ro "$L"
manifest "$M" suse.tsv
subvols "$M" suse.subvols.tsv
btrfs subvolume get-default "$M" | awk '{print $2}' > suse.default
umount "$M"
printf '%s\t%s\n' $((P2 * 512)) $(((E2 - P2 + 1) * 512)) > suse.part
losetup -d "$L" "$L1"; LOOPS=()
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$W/suse.raw" "$W/suse.vhd"
zstd -q -19 -f "$W/suse.vhd" -o suse.vhd.zst
}

# ./gen.sh [features|log|raid|suse ...]: the fixtures named, or all of them.
for g in ${@:-features log raid suse}; do "gen_$g"; done
ls -l ./*.zst
