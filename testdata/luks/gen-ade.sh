#!/bin/bash
# Regenerates the two Azure Disk Encryption (Linux) layout fixtures. Needs e2fsprogs,
# dosfstools, mtools, gdisk, qemu-img, cryptsetup (>= 2.4; no device-mapper needed: the data
# is encrypted by `cryptsetup reencrypt --encrypt --force-offline-reencrypt`), zstd, python3.
#
#  ade-os.vhd.zst     the OS-disk layout, as a fixed VHD (what a managed-disk export is):
#                     GPT; p1 "root": LUKS2 ciphertext from sector 0 (data offset 0, no header
#                     on the partition); p2 "boot": ext4 holding the detached header as
#                     /luks/osluksheader; p15: EFI system partition (FAT).
#  ade-data.img.zst   the data-disk layout: GPT; p1: LUKS2 in place, header in front,
#                     data offset 16 MiB.
# Both: aes-xts-plain64 with a 512-bit key (the OS disk's keyslot argon2id, the data disk's
# pbkdf2-sha256), unlocked by pass-ade.bin (the
# 172-character ADE-style passphrase). Manifests: ade-root.tsv, ade-boot.tsv, ade-data.tsv
# from the source trees; volume keys from `cryptsetup luksDump --dump-volume-key`.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export E2FSPROGS_FAKE_TIME=1700000000
MKE2FS=(-q -F -b 1024 -N 32 -O ^has_journal,^resize_inode -E root_owner=0:0)

manifest() { # SRC OUT
  (cd "$1" && find . -type f | LC_ALL=C sort | while read -r f; do
    printf 'f\t%s\t%s\t%s\n' "${f#./}" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"
  done) > "$2"
}

# Source trees.
mkdir -p "$W/root/etc" "$W/root/home/azureuser" "$W/boot/grub" "$W/boot/luks" "$W/data/backups" "$W/efi/EFI/ubuntu"
printf 'ade-vm-01\n' > "$W/root/etc/hostname"
printf 'UUID=0f0e0d0c-0b0a-4908-8706-050403020100 /boot ext4 defaults 0 2\n/dev/mapper/osencrypt / ext4 defaults 0 1\n' > "$W/root/etc/fstab"
printf 'The one file somebody will need back.\n' > "$W/root/home/azureuser/important.txt"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*131+7)%256 for i in range(70000)))' > "$W/root/home/azureuser/payload.bin"
printf 'set default=0\nlinux /vmlinuz root=/dev/mapper/osencrypt\n' > "$W/boot/grub/grub.cfg"
printf 'search --fs-uuid 0f0e0d0c-0b0a-4908-8706-050403020100\n' > "$W/efi/EFI/ubuntu/grub.cfg"
printf 'nightly dump\n' > "$W/data/backups/README"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*17+5)%251 for i in range(90000)))' > "$W/data/backups/db.dump"
manifest "$W/root" ade-root.tsv
manifest "$W/data" ade-data.tsv

luks() { # kdf-args... -- extra args...
  local kdf=()
  while [ "$1" != -- ]; do kdf+=("$1"); shift; done; shift
  cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt \
    --cipher aes-xts-plain64 --key-size 512 "${kdf[@]}" --hash sha256 \
    --luks2-metadata-size 16k --luks2-keyslots-size 256k --key-file pass-ade.bin "$@"
}

# OS disk: the root filesystem encrypted with its header detached.
truncate -s 256K "$W/root.img"; mkfs.ext4 "${MKE2FS[@]}" -L root -d "$W/root" "$W/root.img"
truncate -s 288K "$W/osluksheader"
luks --pbkdf argon2id --pbkdf-memory 64 --pbkdf-force-iterations 4 --pbkdf-parallel 1 -- --header "$W/osluksheader" "$W/root.img"
cp "$W/osluksheader" "$W/boot/luks/osluksheader"
manifest "$W/boot" ade-boot.tsv
truncate -s 2M "$W/boot.img"; mkfs.ext4 "${MKE2FS[@]}" -L boot -U 0f0e0d0c-0b0a-4908-8706-050403020100 -d "$W/boot" "$W/boot.img"
truncate -s 1M "$W/efi.img"; mkfs.fat -F 12 -n EFI -i 2a2b2c2d "$W/efi.img" >/dev/null
(cd "$W/efi" && MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$W/efi.img" ./* ::/)
truncate -s 6M "$W/os.raw"
sgdisk -U 5d6e7f80-1a2b-4c3d-8e4f-a0b1c2d3e4f5 \
  -n 1:2048:+256K -t 1:8300 -c 1:root \
  -n 2:0:+2M -t 2:8300 -c 2:boot \
  -n 15:0:+1M -t 15:ef00 -c 15:EFI "$W/os.raw" >/dev/null
put() { # image partno
  local start; start=$(sgdisk -i "$2" "$W/os.raw" | awk '/First sector/ {print $3}')
  dd if="$1" of="$W/os.raw" bs=512 seek="$start" conv=notrunc status=none
}
put "$W/root.img" 1; put "$W/boot.img" 2; put "$W/efi.img" 15
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$W/os.raw" "$W/ade-os.vhd"

# Data disk: LUKS2 in place with a 16 MiB data offset. reencrypt puts the data at half the
# reduction (the gap between the 288 KiB header and 16 MiB stays zero); the encrypted tail
# it leaves past the filesystem is cut off again, so the payload is exactly the filesystem.
truncate -s 256K "$W/data.img"; mkfs.ext4 "${MKE2FS[@]}" -L data -d "$W/data" "$W/data.img"
truncate -s $((256*1024 + 32*1024*1024)) "$W/data.img"
luks --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -- --reduce-device-size 32M "$W/data.img"
truncate -s $((16*1024*1024 + 256*1024)) "$W/data.img"
truncate -s 18M "$W/data.raw"
sgdisk -U 6e7f8091-2b3c-4d4e-9f50-b1c2d3e4f506 -n 1:2048:+$((16*1024 + 256))K -t 1:8300 -c 1:data "$W/data.raw" >/dev/null
dd if="$W/data.img" of="$W/data.raw" bs=512 seek=2048 conv=notrunc status=none

# Volume keys as cryptsetup reads them (an oracle independent of flr).
vk() { # name image [header]
  local h=()
  [ $# -ge 3 ] && h=(--header "$3")
  printf '%s\t%s\n' "$1" "$(cryptsetup luksDump -q --dump-volume-key --key-file pass-ade.bin "${h[@]}" "$2" \
    | sed -n '/^MK dump:/,/^$/p;/^Volume key:/,/^$/p' | sed 's/^MK dump://;s/^Volume key://' | tr -d ' \t\n')"
}
{ vk ade-os-root "$W/root.img" "$W/osluksheader"; vk ade-data "$W/data.img"; } > ade-volume-keys.tsv

zstd -19 --long -q -f "$W/ade-os.vhd" -o ade-os.vhd.zst
zstd -19 --long -q -f "$W/data.raw" -o ade-data.img.zst
ls -l ade-*.zst
