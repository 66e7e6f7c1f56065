#!/bin/bash
# Regenerates the FAT fixtures of flr-fat with dosfstools (mkfs.fat) and
# mtools (mcopy), the independent makers, checked with fsck.fat. Needs
# dosfstools, mtools, coreutils, openssl, zstd.
#
#   fat12.img     1440 KiB, FAT12, 512-byte sectors
#   fat16.img     16 MiB,   FAT16, 2048-byte sectors
#   fat32.img     36 MiB,   FAT32, 512-byte sectors, 1-sector clusters (>65525 clusters)
#   fat32-4k.img  8 MiB,    FAT32, 4096-byte sectors: fewer clusters than the
#                 official FAT32 minimum, so the FAT type must come from the BPB
#                 (made big, filled, then cut down: see SHRINK_KIB below)
#
# Each holds the same tree (src/ below, built here): nested directories, long
# and Unicode names, names with spaces, an empty file, a ~400 KiB text file,
# a directory with 120 entries, and a file written into holes left by deleted
# files so that its cluster chain is fragmented.
#
# Outputs, per image: <img>.zst, <img>.manifest.tsv (kind, path, size, sha256
# of the SOURCE files, computed with sha256sum), <img>.fsck.txt
# (`fsck.fat -n -v`: label, serial, cluster counts) and <img>.minfo.txt.
# All files have mtime 2021-03-04 05:06:08 (written with TZ=UTC, so the FAT
# local time reads back as that UTC time).
set -euo pipefail
cd "$(dirname "$0")"
export TZ=UTC LC_ALL=C.UTF-8 MTOOLS_SKIP_CHECK=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src=$work/src
mkdir -p "$src/docs/nested/deeper" "$src/many" "$src/Program Files/Some App"
printf 'hello, FAT\n' > "$src/hello.txt"
: > "$src/empty.txt"
printf 'spaces in the name\n' > "$src/name with spaces.txt"
printf 'a long file name\n' > "$src/A very long file name that needs many LFN entries.text"
printf 'unicode\n' > "$src/café ünïcode ✓.txt"
printf 'MixedCase\n' > "$src/MixedCase.Txt"
printf 'lower\n' > "$src/lower.txt"
printf '# readme\n\nnested file\n' > "$src/docs/readme.md"
printf 'leaf\n' > "$src/docs/nested/deeper/leaf.txt"
printf 'app config\n' > "$src/Program Files/Some App/config.ini"
# ~400 KiB of text whose every line differs (compresses well, but any
# misplaced cluster changes the hash).
seq -f '%08.0f the quick brown fox jumps over the lazy dog' 1 9000 > "$src/big.txt"
# 20 KiB of pseudo-random bytes from a fixed key.
head -c 20480 > "$src/random.bin" < <(openssl enc -aes-128-ctr -nosalt \
  -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null)
for i in $(seq -w 1 120); do printf 'entry %s\n' "$i" > "$src/many/file-$i.txt"; done
seq -f 'fragment line %06.0f' 1 3000 > "$src/fragmented.txt"   # ~64 KiB
find "$src" -exec touch -h -d '2021-03-04 05:06:08 UTC' {} +

# Files that are copied and deleted to leave holes in the data area.
holes=$work/holes
mkdir -p "$holes"
for i in 1 2 3 4 5 6; do head -c 6000 /dev/zero | tr '\0' "$i" > "$holes/h$i"; done

make() { # img size-KiB mkfs-args...
  local img=$1 kib=$2; shift 2
  local d="$work/$img"
  rm -f "$d"
  mkfs.fat -C "$@" "$d" "$kib" >/dev/null
  # Everything except fragmented.txt, then holes, then fragmented.txt.
  for f in "$src"/*; do
    [ "$(basename "$f")" = fragmented.txt ] && continue
    mcopy -s -m -i "$d" "$f" ::/
  done
  for i in 1 2 3 4 5 6; do mcopy -m -i "$d" "$holes/h$i" ::/; done
  for i in 2 4 6; do mdel -i "$d" "::/h$i"; done
  mcopy -m -i "$d" "$src/fragmented.txt" ::/
  for i in 1 3 5; do mdel -i "$d" "::/h$i"; done
  if [ -n "${SHRINK_KIB:-}" ]; then
    # mtools, like the cluster-count rule, takes a FAT32 with fewer than
    # 65525 clusters for FAT16 and cannot fill one. So the volume is made
    # big enough, filled (files land at its start), then its declared size
    # is cut: total sectors (BPB offset 32, in the boot sector and its
    # backup at sector 6) set to the smaller size, the image truncated, and
    # the FSInfo free count / next-free hint (offsets 488, 492) set to
    # "unknown". The FAT stays longer than needed, which is legal.
    # fsck.fat below checks the result.
    local bps; bps=$(od -An -tu2 -j11 -N2 "$d" | tr -d ' ')
    local sectors=$(( SHRINK_KIB * 1024 / bps ))
    le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( $1 & 255 )) $(( ($1 >> 8) & 255 )) $(( ($1 >> 16) & 255 )) $(( ($1 >> 24) & 255 )); }
    printf "$(le32 "$sectors")" | dd of="$d" bs=1 seek=32 conv=notrunc status=none
    printf "$(le32 "$sectors")" | dd of="$d" bs=1 seek=$(( 6 * bps + 32 )) conv=notrunc status=none
    printf '\xff\xff\xff\xff\xff\xff\xff\xff' | dd of="$d" bs=1 seek=$(( bps + 488 )) conv=notrunc status=none
    truncate -s $(( SHRINK_KIB * 1024 )) "$d"
  fi
  fsck.fat -n -v "$d" > "$img.fsck.txt" 2>&1 || true
  minfo -i "$d" > "$img.minfo.txt" 2>&1 || true
  cp "$d" "$img"
  zstd -q -f -19 --long "$img" -o "$img.zst"
  rm -f "$img"
  # Manifest from the source tree.
  ( cd "$src"
    find . -mindepth 1 -type d | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r p; do
      printf 'd\t%s\t0\t\n' "$p"
    done
    find . -type f | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r p; do
      printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$p")" "$(sha256sum "$p" | cut -d' ' -f1)"
    done
  ) > "$img.manifest.tsv"
}

make fat12.img 1440 -F 12 -i 1234ABCD -n "FLR FAT12"
make fat16.img 16384 -F 16 -S 2048 -s 1 -i 0000BEEF -n "FLR FAT16"
make fat32.img 36864 -F 32 -s 1 -i DEADBEEF -n "FLR FAT32"
SHRINK_KIB=8192 make fat32-4k.img 264000 -F 32 -S 4096 -s 1 -i 4096F32A -n "FLR 4K"
ls -l
