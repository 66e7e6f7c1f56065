#!/bin/bash
# Builds the composite disk fixtures used by flr's end-to-end tests and the demo image,
# with independent tools only (mkfs.fat + mcopy, mkfs.ext4 -d, mkntfs + ntfs-3g, sgdisk,
# sfdisk, qemu-img). Manifests (kind, path, size, sha256) are computed from the SOURCE
# trees with sha256sum, never from flr.
#
# Needs root (ntfs-3g FUSE mount) and: dosfstools mtools e2fsprogs ntfs-3g gdisk fdisk
# qemu-utils zstd python3. Run from anywhere: testdata/disks/gen.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'mountpoint -q "$work/mnt" && umount "$work/mnt"; rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=1700000000
export E2FSPROGS_FAKE_TIME=1700000000
T="2023-11-14 22:13:20 UTC"

# Deterministic pseudo-random bytes: prng SEED BYTES
prng() { python3 -c "
import hashlib,sys
seed=sys.argv[1].encode(); n=int(sys.argv[2]); out=bytearray(); i=0
while len(out)<n:
    out+=hashlib.sha256(seed+i.to_bytes(8,'little')).digest(); i+=1
sys.stdout.buffer.write(bytes(out[:n]))" "$1" "$2"; }

# manifest SRC OUT: kind path size sha256 for every entry below SRC
manifest() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r p; do
    r=${p#./}
    if [ -L "$p" ]; then t=$(readlink "$p"); printf 'l\t%s\t%s\t%s\n' "$r" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$p" ]; then printf 'd\t%s\t0\t-\n' "$r"
    else printf 'f\t%s\t%s\t%s\n' "$r" "$(stat -c %s "$p")" "$(sha256sum < "$p" | cut -d' ' -f1)"; fi
  done) > "$2"
}

stamp() { find "$1" -depth -exec touch -h -d "$T" {} +; }

# ---------- hostile: ext4 whose names and links try to escape the destination ----------
# `gen.sh hostile` rebuilds only this image.
hostile() {
h=$work/src-hostile
mkdir -p "$h/dir" "$h/PLACEHOLDER_DIR_1" "$h/hard"
printf 'inside\n' > "$h/dir/ok.txt"
printf 'evil\n' > "$h/PLACEHOLDER_DIR_1/evil.txt"
printf 'backslash\n' > "$h/..\\..\\evil-backslash.txt"
printf 'device\n' > "$h/CON"
printf 'device\n' > "$h/aux.txt"
printf 'reserved nul\n' > "$h/nul.txt"
printf 'reserved com1\n' > "$h/COM1"
printf 'reserved lpt9\n' > "$h/LPT9.log"
printf 'escape\n' > "$h/$(printf 'term\033[2Jclear')"
printf 'dots\n' > "$h/PLACEHOLDER_DOTS"
# Names no tool creates, patched in below: "/" inside, absolute-looking, NUL.
printf 'slash\n' > "$h/PLACEHOLDER_SLASH_NAME_XXXXXXXXX"
printf 'absolute\n' > "$h/PLACEHOLDER_ABSOLUTE_NAME_XXXXXX"
printf 'nul byte\n' > "$h/PLACEHOLDER_NUL_NAME"
# Names that differ only in case, or only in Unicode normalisation (NFC/NFD).
printf 'mixed case\n' > "$h/Readme.txt"
printf 'upper case\n' > "$h/README.TXT"
printf 'nfc\n' > "$h/$(printf 'caf\xc3\xa9.txt')"
printf 'nfd\n' > "$h/$(printf 'cafe\xcc\x81.txt')"
# The longest name ext4 allows (255 bytes), one that must grow when made safe, and a
# folder chain whose path is longer than PATH_MAX (4096) once extracted: 18 levels of
# 250-byte names, made through directory handles (no long paths needed).
python3 - "$h" <<'PY'
import os, sys
h = sys.argv[1]
open(os.path.join(h, 'n' * 251 + '.txt'), 'w').write('long name\n')
open(os.path.join(h, 'aux.' + 'x' * 251), 'w').write('long reserved\n')
fd = os.open(h, os.O_RDONLY | os.O_DIRECTORY)
os.mkdir('deep', dir_fd=fd)
cur = os.open('deep', os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
for i in range(18):
    name = ('%02d' % i) + 'd' * 248
    os.mkdir(name, dir_fd=cur)
    nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=cur)
    os.close(cur); cur = nxt
f = os.open('bottom.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=cur)
os.write(f, b'deep down\n'); os.close(f); os.close(cur); os.close(fd)
PY
# Two names for one inode.
printf 'linked\n' > "$h/hard/a.txt"
ln "$h/hard/a.txt" "$h/hard/b.txt"
ln -s /etc/passwd "$h/abs-link"
ln -s ../../../../../../tmp/flr-escape "$h/up-link"
ln -s /tmp "$h/PLACEHOLDER_LINK_1"
find "$h" -depth -execdir touch -h -d "$T" {} +
rm -f "$work/hostile.img"; truncate -s 4M "$work/hostile.img"
mkfs.ext4 -q -F -d "$h" -L hostile -U 0badbad0-0000-4000-8000-000000000bad -O ^metadata_csum,^dir_index,^has_journal -b 1024 -E root_owner=0:0,hash_seed=4a1b2c3d-0000-4000-8000-000000000002 "$work/hostile.img"
# Patch names in the root folder block (no checksums with ^metadata_csum): the directory
# PLACEHOLDER_DIR_1 gets the same name as the symlink to /tmp ("L"), PLACEHOLDER_DOTS
# becomes "..", and three names get a "/" or a NUL. Name lengths are shortened in place;
# record lengths stay.
python3 - "$work/hostile.img" <<'PY'
import sys, struct
p = sys.argv[1]; img = bytearray(open(p, 'rb').read())
def rename(old, new):
    i = img.find(old)
    assert i > 8 and img.find(old, i + 1) < 0, old
    assert img[i - 2] == len(old), old          # name_len byte precedes file_type
    assert len(new) <= len(old), new
    img[i - 2] = len(new)
    img[i:i + len(old)] = new + b'\0' * (len(old) - len(new))
rename(b'PLACEHOLDER_LINK_1', b'L')
rename(b'PLACEHOLDER_DIR_1', b'L')
rename(b'PLACEHOLDER_DOTS', b'..')
rename(b'PLACEHOLDER_SLASH_NAME_XXXXXXXXX', b'../../../tmp/flr-slash')
rename(b'PLACEHOLDER_ABSOLUTE_NAME_XXXXXX', b'/tmp/flr-abs-name')
rename(b'PLACEHOLDER_NUL_NAME', b'nul\0byte.txt')
open(p, 'wb').write(img)
PY
# Both names of hard/a.txt must be one inode (mkfs.ext4 -d keeps hard links).
links=$(debugfs -R 'stat /hard/a.txt' "$work/hostile.img" 2>/dev/null | sed -n 's/.*Links: \([0-9]*\).*/\1/p')
[ "$links" = 2 ] || { echo "hard/a.txt has $links links, want 2" >&2; exit 1; }
e2fsck -fn "$work/hostile.img" > "$here/hostile.e2fsck.txt" 2>&1 || true
zstd -q -19 -f "$work/hostile.img" -o "$here/hostile.img.zst"

# The same kind of names in a FAT12 volume (mkfs.fat + mcopy), long names patched
# after mcopy: "/", "\", ESC and ".." in VFAT long-name entries (UTF-16; the
# long-name checksum covers only the 8.3 name, so it stays valid).
f=$work/src-hostile-fat
mkdir -p "$f"
printf 'aux\n' > "$f/aux.txt"
printf 'slash\n' > "$f/slashQname.txt"
printf 'back\n' > "$f/backKslash.txt"
printf 'ctl\n' > "$f/ctlVchar.txt"
printf 'dots\n' > "$f/ppp pp"
stamp "$f"
rm -f "$work/hostile-fat.img"; truncate -s 2M "$work/hostile-fat.img"
mkfs.fat -F 12 -n HOSTILE -i 0BAD0FA7 "$work/hostile-fat.img" >/dev/null
(cd "$f" && MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$work/hostile-fat.img" ./* ::/)
python3 - "$work/hostile-fat.img" <<'PY'
import sys
p = sys.argv[1]; img = bytearray(open(p, 'rb').read())
u = lambda s: s.encode('utf-16-le')
def sub(old, new):
    i = img.find(old)
    assert i > 0 and img.find(old, i + 1) < 0, old
    img[i:i + len(new)] = new
    return i
sub(u('Q'), u('/'))
sub(u('K'), u('\\'))
sub(u('V'), u('\x1b'))
# "ppp pp" -> "..": its first five units sit in name1 (bytes 1-10 of the entry),
# the sixth starts name2 (byte 14); end with 0x0000, pad with 0xFFFF.
i = sub(u('ppp p'), u('..') + b'\0\0' + b'\xff\xff' * 2)
j = i + 10 + 3
assert img[j:j + 4] == u('p') + b'\0\0'
img[j:j + 4] = b'\xff\xff' * 2
open(p, 'wb').write(img)
PY
zstd -q -19 -f "$work/hostile-fat.img" -o "$here/hostile-fat.img.zst"
}
if [ "${1:-}" = hostile ]; then hostile; ls -l "$here"/hostile*.img.zst; exit 0; fi

# ---------- source trees ----------
esp=$work/src-esp; root=$work/src-root; data=$work/src-data
mkdir -p "$esp/EFI/BOOT" "$root/etc" "$root/home/alice" "$root/var/log" "$root/usr/share/zoneinfo" "$data/Users/Bob/Documents" "$data/Projects/2024"
prng esp-bootx64 65536 > "$esp/EFI/BOOT/BOOTX64.EFI"
printf 'fs0:\\EFI\\BOOT\\BOOTX64.EFI\r\n' > "$esp/startup.nsh"
printf '127.0.0.1\tlocalhost\n10.0.0.4\tweb01.internal web01\n' > "$root/etc/hosts"
printf 'UUID=6e1f0c3a-5d2b-4b7e-9a31-0c5d1e2f3a4b / ext4 defaults 0 1\n' > "$root/etc/fstab"
printf 'Remember: rotate the storage keys on Friday.\n' > "$root/home/alice/notes.txt"
python3 -c "
import sys
for i in range(4000): sys.stdout.write('Nov 14 22:%02d:%02d web01 app[%d]: request %d served in %d ms\n' % (i//60%60, i%60, 1000+i%7, i, (i*37)%250))
" > "$root/var/log/syslog"
prng tz-utc 118 > "$root/usr/share/zoneinfo/UTC"
ln -s ../usr/share/zoneinfo/UTC "$root/etc/localtime"
chmod 600 "$root/home/alice/notes.txt"
printf 'Quarterly report\n================\nRevenue up 12%%.\n' > "$data/Users/Bob/Documents/report.txt"
python3 -c "
import sys
sys.stdout.write('month,amount\n')
for m in range(1,13): sys.stdout.write('2024-%02d,%d\n' % (m, m*1234))
" > "$data/Users/Bob/Documents/budget.csv"
prng data-blob 300000 > "$data/Projects/2024/model.bin"
printf 'Größe und Maße\n' > "$data/Projects/Übersicht.txt"
for d in "$esp" "$root" "$data"; do stamp "$d"; done

# ---------- filesystems ----------
mkfat() { # SRC IMG MiB LABEL SERIAL BITS
  rm -f "$2"; truncate -s "$3M" "$2"
  mkfs.fat -F "$6" -s 1 -n "$4" -i "$5" "$2" >/dev/null
  (cd "$1" && MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$2" ./* ::/)
}
mkext4() { # SRC IMG MiB LABEL UUID
  rm -f "$2"; truncate -s "$3M" "$2"
  mkfs.ext4 -q -F -d "$1" -L "$4" -U "$5" -E root_owner=0:0,hash_seed=4a1b2c3d-0000-4000-8000-000000000001 -T small "$2"
}
mkntfs_from() { # SRC IMG MiB LABEL
  rm -f "$2"; truncate -s "$3M" "$2"
  mkntfs -q -F -Q -L "$4" -s 512 -c 4096 "$2" >/dev/null
  mkdir -p "$work/mnt"
  ntfs-3g "$2" "$work/mnt"
  cp -a "$1"/. "$work/mnt"/ 2>/dev/null || cp -r "$1"/. "$work/mnt"/
  umount "$work/mnt"
}

mkfat "$esp" "$work/esp.img" 2 EFI 1A2B3C4D 12
mkext4 "$root" "$work/root.img" 8 root 6e1f0c3a-5d2b-4b7e-9a31-0c5d1e2f3a4b
mkntfs_from "$data" "$work/data.img" 6 DATA

# ---------- demo: GPT in a dynamic VHD ----------
disk=$work/demo.raw
rm -f "$disk"; truncate -s 18M "$disk"
sgdisk -Z "$disk" >/dev/null 2>&1 || true
sgdisk -U 0F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0 \
  -n 1:2048:+2M  -t 1:EF00 -c 1:"EFI system" -u 1:11111111-2222-4333-8444-555555555501 \
  -n 2:0:+8M    -t 2:8300 -c 2:"root"       -u 2:11111111-2222-4333-8444-555555555502 \
  -n 3:0:+6M    -t 3:0700 -c 3:"data"       -u 3:11111111-2222-4333-8444-555555555503 \
  "$disk" >/dev/null
put() { # IMG DISK START_SECTOR
  dd if="$1" of="$2" bs=512 seek="$3" conv=notrunc,sparse status=none; }
starts=$(sfdisk --json "$disk" | python3 -c "import json,sys; print(' '.join(str(p['start']) for p in json.load(sys.stdin)['partitiontable']['partitions']))")
set -- $starts
put "$work/esp.img" "$disk" "$1"; put "$work/root.img" "$disk" "$2"; put "$work/data.img" "$disk" "$3"
sfdisk --json "$disk" > "$here/demo.sfdisk.json"
qemu-img convert -f raw -O vpc -o subformat=dynamic "$disk" "$here/../demo.vhd"
qemu-img convert -f raw -O vhdx -o subformat=dynamic "$disk" "$work/demo.vhdx"
zstd -q -19 --long -f "$work/demo.vhdx" -o "$here/demo.vhdx.zst"
manifest "$esp" "$here/demo.p1.tsv"; manifest "$root" "$here/demo.p2.tsv"; manifest "$data" "$here/demo.p3.tsv"

# ---------- MBR: primary FAT16 (p1), extended with logical ext4 (p5) and NTFS (p6) ----------
mbr=$work/mbr.raw
rm -f "$mbr"; truncate -s 56M "$mbr"
sfdisk -q "$mbr" <<'SF'
label: dos
label-id: 0x1badcafe
start=2048, size=16384, type=6, bootable
start=18432, type=5
start=20480, size=20480, type=83
start=43008, size=32768, type=7
SF
mkfat "$esp" "$work/mbr-fat.img" 8 MBRFAT 0BADF00D 16
mkext4 "$root" "$work/mbr-ext4.img" 10 logical 0a0b0c0d-1111-4222-8333-444455556666
mkntfs_from "$data" "$work/mbr-ntfs.img" 16 LOGNTFS
put "$work/mbr-fat.img" "$mbr" 2048; put "$work/mbr-ext4.img" "$mbr" 20480; put "$work/mbr-ntfs.img" "$mbr" 43008
sfdisk --json "$mbr" > "$here/mbr.sfdisk.json"
zstd -q -19 --long -f "$mbr" -o "$here/mbr.img.zst"

hostile

ls -l "$here" "$here/../demo.vhd"
