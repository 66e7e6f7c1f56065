#!/bin/bash
# Regenerates the partition-table fixtures of flr-part, with sgdisk and
# sfdisk as the independent makers and oracles. Needs root (a loop device
# with 4096-byte sectors for the 4Kn disk), gdisk, fdisk (sfdisk), zstd.
#
#   gpt.img            8 MiB, 512-byte sectors, GPT with entries 1,2,3,6 used
#                      (4 and 5 empty), names incl. non-ASCII, fixed GUIDs
#   gpt-4k.img         8 MiB, 4096-byte logical sectors, GPT, 2 partitions
#   mbr.img            16 MiB, MBR: 2 primaries + extended (slot 3) with 3 logicals
#   gpt-noprimary.img  gpt.img with the primary header (LBA 1) zeroed: the
#                      backup header at the end must be used
#
# Beside each image: <img>.sfdisk.json (sfdisk --json, the oracle the tests
# parse) and <img>.sgdisk.txt / <img>.sfdisk.txt (human-readable).
# Outputs are committed as <img>.zst (zstd -19 --long).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

json() { sfdisk --json "$1"; }

# 1. GPT, 512-byte sectors.
img=$work/gpt.img
truncate -s 8M "$img"
sgdisk -Z "$img" >/dev/null 2>&1 || true
sgdisk -U 9D8C1B2A-3F4E-4A5B-8C6D-7E8F90A1B2C3 \
  -n 1:2048:+1M    -t 1:ef00 -c 1:"EFI system partition" -u 1:11111111-2222-4333-8444-555555555501 \
  -n 2:0:+1M       -t 2:0c01 -c 2:"Microsoft reserved partition" -u 2:11111111-2222-4333-8444-555555555502 \
  -n 3:0:+2M       -t 3:0700 -c 3:"Basic data partition" -u 3:11111111-2222-4333-8444-555555555503 \
  -n 6:0:+1M       -t 6:8300 -c 6:"Linux root ümlaut" -u 6:11111111-2222-4333-8444-555555555506 \
  -A 6:set:2 \
  "$img" >/dev/null
cp "$img" gpt.img
json gpt.img > gpt.img.sfdisk.json
sgdisk -p gpt.img > gpt.img.sgdisk.txt

# 2. GPT whose primary header is zeroed (a copy of 1).
cp gpt.img gpt-noprimary.img
dd if=/dev/zero of=gpt-noprimary.img bs=512 seek=1 count=1 conv=notrunc status=none
# sfdisk falls back to the backup header too (and says so on stderr).
json gpt-noprimary.img > gpt-noprimary.img.sfdisk.json 2>/dev/null

# 3. GPT on a disk with 4096-byte logical sectors, through a loop device.
img=$work/gpt-4k.img
truncate -s 8M "$img"
loop=$(losetup -f --show -b 4096 "$img")
trap 'losetup -d "$loop" 2>/dev/null || true; rm -rf "$work"' EXIT
sgdisk -U 0F0E0D0C-0B0A-4908-8706-050403020100 \
  -n 1:256:+1M -t 1:ef00 -c 1:"ESP 4k" -u 1:AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEE0001 \
  -n 2:0:0     -t 2:8300 -c 2:"data 4k" -u 2:AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEE0002 \
  "$loop" >/dev/null
json "$loop" > gpt-4k.img.sfdisk.json
sgdisk -p "$loop" > gpt-4k.img.sgdisk.txt
losetup -d "$loop"
trap 'rm -rf "$work"' EXIT
cp "$img" gpt-4k.img

# 4. MBR: two primaries, an extended partition in slot 3 holding three
# logical partitions (Linux numbers them 5, 6, 7).
img=$work/mbr.img
truncate -s 16M "$img"
# Named lines set the partition numbers (5, 6, 7 are logicals); libfdisk
# wants a 2048-sector gap before each logical for its EBR.
(cd "$work" && sfdisk --no-reread --no-tell-kernel -q mbr.img) <<'EOF'
label: dos
label-id: 0x1234abcd
unit: sectors

mbr.img1 : start=2048, size=2048, type=c, bootable
mbr.img2 : start=4096, size=2048, type=83
mbr.img3 : start=8192, size=20480, type=5
mbr.img5 : start=10240, size=1024, type=7
mbr.img6 : start=14336, size=1024, type=83
mbr.img7 : start=18432, size=2048, type=82
EOF
cp "$img" mbr.img
json mbr.img > mbr.img.sfdisk.json
sfdisk -d mbr.img > mbr.img.sfdisk.txt

for f in gpt.img gpt-noprimary.img gpt-4k.img mbr.img; do
  zstd -q -f -19 --long "$f" -o "$f.zst"
  rm -f "$f"
done
ls -l
