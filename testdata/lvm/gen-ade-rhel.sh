#!/bin/bash
# Regenerates the RHEL-family Azure Disk Encryption OS-disk fixture. Needs lvm2, xfsprogs,
# cryptsetup (>= 2.4; reencrypt --force-offline-reencrypt, no device-mapper), gdisk, dosfstools,
# mtools, qemu-img, util-linux (losetup, mount), python3, zstd; runs as root.
#
# The layout, as a fixed VHD (what a managed-disk export is):
#   GPT; p1 "EFI" (FAT); p2 "boot": XFS holding the detached LUKS2 header as /luks/osluksheader;
#   p3 "root": LUKS2 ciphertext from its first sector (data offset 0, the header lives on p2),
#   aes-xts-plain64, 512-bit key, 512-byte sectors, unlocked by ../luks/pass-ade.bin; inside it
#   an LVM2 PV of VG rootvg with two XFS LVs, rootlv and varlv (the RHEL images' layout).
#
# Ciphertext does not compress, and p3 is 34 MiB, so it is not committed as such:
#   ade-rhel.vhd.zst       the VHD with p3 left as zeros (everything else as made)
#   ade-rhel-p3.plain.zst  p3's plaintext (the PV as LVM and place.py wrote it)
#   ade-rhel.tsv           p3's byte offset in the VHD and length, the volume key (from
#                          `cryptsetup luksDump --dump-volume-key`), and the sha256 of the
#                          ciphertext cryptsetup wrote
# The tests rebuild p3 by encrypting the plaintext with the xts-mode crate under that key and
# check the result against cryptsetup's sha256 before splicing it in, so the disk under test
# is byte for byte the one cryptsetup made.
# Manifests from the source trees: ade-rhel-root.tsv, ade-rhel-var.tsv, ade-rhel-boot.tsv.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
LOOPS=()
cleanup() {
  mountpoint -q "$W/mnt" 2>/dev/null && umount "$W/mnt"
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1 LVM_SUPPRESS_FD_WARNINGS=1
. ./nodm.sh
PASS=../luks/pass-ade.bin
mkdir -p "$W/mnt"

manifest() { # SRC OUT
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}
mkxfs() { # NAME SIZE UUID LABEL
  truncate -s "$2" "$W/$1.xfs"
  mkfs.xfs -q -f -m uuid="$3" -L "$4" "$W/$1.xfs"
  mount -o loop "$W/$1.xfs" "$W/mnt"
  cp -a "$W/src-$1/." "$W/mnt/"
  umount "$W/mnt"
}

# Source trees.
mkdir -p "$W/src-root/etc" "$W/src-root/home/azureuser" "$W/src-var/log" "$W/src-var/lib/app" "$W/src-boot/grub2" "$W/src-boot/luks"
printf 'rhel-ade-01\n' > "$W/src-root/etc/hostname"
printf '/dev/mapper/rootvg-rootlv / xfs defaults 0 0\n/dev/mapper/rootvg-varlv /var xfs defaults 0 0\nUUID=44444444-5555-4666-8777-888888888888 /boot xfs defaults 0 0\n' > "$W/src-root/etc/fstab"
printf 'The one file somebody will need back, from RHEL.\n' > "$W/src-root/home/azureuser/important.txt"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*131+7+(i>>10))%256 for i in range(2000000)))' > "$W/src-root/home/azureuser/payload.bin"
ln -s ../proc/self/mounts "$W/src-root/etc/mtab"
printf 'Nov 28 00:00:00 rhel-ade-01 kernel: booted\n' > "$W/src-var/log/messages"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*17+5)%251 for i in range(500000)))' > "$W/src-var/lib/app/state.db"
printf 'set default=0\nlinux /vmlinuz root=/dev/mapper/rootvg-rootlv rd.luks.uuid=...\n' > "$W/src-boot/grub2/grub.cfg"
manifest "$W/src-root" ade-rhel-root.tsv
manifest "$W/src-var" ade-rhel-var.tsv

# p3's plaintext: a PV with rootvg/rootlv and rootvg/varlv, filesystems placed at their extents.
mkxfs root 16M 55555555-6666-4777-8888-999999999999 root
mkxfs var 16M 66666666-7777-4888-8999-aaaaaaaaaaaa var
truncate -s 34M "$W/p3.img"
P=$(losetup -f --show "$W/p3.img"); LOOPS+=("$P")
lvm_ pvcreate -q -u cccccc-1111-2222-3333-4444-5555-cccccc --norestorefile "$P"
lvm_ vgcreate -q -s 1M rootvg "$P"
lvm_ lvcreate -q --activate n --zero n -n rootlv -L 16M rootvg
lvm_ lvcreate -q --activate n --zero n -n varlv -L 16M rootvg
lvm_ lvs --segments --reportformat json --units b --nosuffix -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges rootvg > "$W/lvs.json"
lvm_ pvs --reportformat json --units b --nosuffix -o pv_name,pe_start,vg_extent_size "$P" > "$W/pvs.json"
python3 place.py "$W/lvs.json" "$W/pvs.json" rootlv "$W/root.xfs" "$P=$W/p3.img:0"
python3 place.py "$W/lvs.json" "$W/pvs.json" varlv "$W/var.xfs" "$P=$W/p3.img:0"
losetup -d "$P"; LOOPS=()
cp "$W/p3.img" "$W/p3.plain"

# Encrypt p3 in place with the header detached (data offset 0), as ADE does.
truncate -s 288K "$W/osluksheader"
cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt --cipher aes-xts-plain64 --key-size 512 \
  --sector-size 512 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256 \
  --luks2-metadata-size 16k --luks2-keyslots-size 256k --key-file "$PASS" --header "$W/osluksheader" "$W/p3.img"
cp "$W/osluksheader" "$W/src-boot/luks/osluksheader"
manifest "$W/src-boot" ade-rhel-boot.tsv
mkxfs boot 16M 44444444-5555-4666-8777-888888888888 boot

# The disk.
truncate -s 1M "$W/efi.img"; mkfs.fat -F 12 -n EFI -i 3a3b3c3d "$W/efi.img" >/dev/null
truncate -s 56M "$W/os.raw"
sgdisk -U 8a9b0c1d-2e3f-4a4b-8c5d-6e7f8091a2b3 \
  -n 1:2048:+1M -t 1:ef00 -c 1:EFI \
  -n 2:0:+16M -t 2:8300 -c 2:boot \
  -n 3:0:+34M -t 3:8300 -c 3:root "$W/os.raw" >/dev/null
start() { echo $(( $(sgdisk -i "$1" "$W/os.raw" | awk '/First sector/ {print $3}') * 512 )); }
dd if="$W/efi.img" of="$W/os.raw" bs=1M seek="$(( $(start 1) / 1048576 ))" conv=notrunc status=none
dd if="$W/boot.xfs" of="$W/os.raw" bs=1M seek="$(( $(start 2) / 1048576 ))" conv=notrunc status=none
# p3 stays zero in the committed VHD; the ciphertext's digest and the key rebuild it.
p3=$(start 3)
vk=$(cryptsetup luksDump -q --dump-volume-key --key-file "$PASS" --header "$W/osluksheader" "$W/p3.img" \
  | sed -n '/^MK dump:/,/^$/p;/^Volume key:/,/^$/p' | sed 's/^MK dump://;s/^Volume key://' | tr -d ' \t\n')
printf 'p3_offset\t%s\np3_length\t%s\nvolume_key\t%s\nciphertext_sha256\t%s\nsector_size\t512\n' \
  "$p3" "$(stat -c %s "$W/p3.img")" "$vk" "$(sha256sum < "$W/p3.img" | cut -d' ' -f1)" > ade-rhel.tsv
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$W/os.raw" "$W/ade-rhel.vhd"
zstd -19 --long -q -f "$W/ade-rhel.vhd" -o ade-rhel.vhd.zst
zstd -19 --long -q -f "$W/p3.plain" -o ade-rhel-p3.plain.zst
ls -l ade-rhel*.zst
