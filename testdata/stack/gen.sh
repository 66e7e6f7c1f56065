#!/bin/bash
# Regenerates the scanner fixtures: layer stacks outside the classic pipeline, made only by
# independent tools. Needs lvm2, cryptsetup (>= 2.4: reencrypt --force-offline-reencrypt, no
# device-mapper), e2fsprogs, xfsprogs, ntfs-3g (mkntfs, ntfs-3g over FUSE), gdisk, qemu-img,
# util-linux (losetup, mount), python3, zstd; runs as root (loop devices, mounts).
#
# stacks.img: a raw disk whose whole surface is an LVM2 PV (VG datavg), with
#   datavg/cryptlv: LUKS2 (header on the LV) → ext4            (crypt-on-LVM)
#   datavg/nestlv:  LUKS2 (header on the LV) → LVM2 PV (VG innervg) → innervg/datalv → XFS
#                                                              (LVM on LUKS on an LV)
#   Both LUKS volumes were encrypted in place by `cryptsetup reencrypt --encrypt`, keyed by
#   pass-stack.bin. Ciphertext does not compress, so the committed stacks.img.zst holds each
#   LUKS payload as plaintext; stacks.tsv gives, per LUKS volume, the payload's byte offset in
#   the disk and length, its volume key (cryptsetup luksDump --dump-volume-key), its sector
#   size and the sha256 of the ciphertext cryptsetup wrote. The tests encrypt the plaintext
#   with the xts-mode crate under that key and check cryptsetup's sha256 before using it, so
#   the disk under test is byte for byte the one cryptsetup made.
#   Manifests from the source trees: stacks-crypt.tsv, stacks-nested.tsv.
#
# fslogix.vhd: an Azure Virtual Desktop file server's disk: a dynamic VHD, GPT, one ext4
#   partition holding /Profiles/alice/Profile_alice.vhdx, an FSLogix-style profile disk: a
#   dynamic VHDX (qemu-img, 1 MiB blocks), GPT, one NTFS partition (mkntfs, filled through
#   ntfs-3g). Manifests: fslogix-outer.tsv (the ext4), fslogix-profile.tsv (the NTFS).
set -euo pipefail
export LC_ALL=C TZ=UTC
cd "$(dirname "$0")"
W=$(mktemp -d /tmp/flr-stack-gen.XXXXXX)
LOOPS=()
cleanup() {
  for m in "$W"/mnt*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
export QA_CHECK_FS=1 TEST_DIR=1 TEST_DEV=1 LVM_SUPPRESS_FD_WARNINGS=1
CFG='devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } global { use_lvmpolld = 0 }'
lvm_() { "$@" --config "$CFG" --driverloaded n 2> >(grep -v -e 'Activation disabled' -e 'not zeroed' >&2); }
PASS=pass-stack.bin
[ -f "$PASS" ] || printf 'stacked layers, one key\n' > "$PASS"
mkdir -p "$W/mnt"

manifest() { # SRC OUT
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}
pattern() { # SIZE SEED: deterministic bytes
  python3 -c 'import sys; n,s=int(sys.argv[1]),int(sys.argv[2]); sys.stdout.buffer.write(bytes(((i*s+(i>>9)*7+s)%251) for i in range(n)))' "$1" "$2"
}
# Encrypts FILE in place as LUKS2 with the header at its start (the data shifts to the
# payload offset cryptsetup chooses), prints "payload_offset volume_key".
luks_encrypt() {
  cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt --cipher aes-xts-plain64 \
    --key-size 256 --sector-size 512 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256 \
    --luks2-metadata-size 16k --luks2-keyslots-size 256k --reduce-device-size 1M \
    --key-file "$PASS" "$1" >/dev/null
  local off vk
  off=$(cryptsetup luksDump "$1" | awk '/^Data segments:/ {s=1} s && /offset:/ {print $2; exit}')
  vk=$(cryptsetup luksDump -q --dump-volume-key --key-file "$PASS" "$1" \
    | sed -n '/^MK dump:/,/^$/p;/^Volume key:/,/^$/p' | sed 's/^MK dump://;s/^Volume key://' | tr -d ' \t\n')
  echo "$off $vk"
}

# ---- stacks.img ----
mkdir -p "$W/src-crypt/etc" "$W/src-crypt/data" "$W/src-nested/srv/app"
printf 'crypt-on-lvm\n' > "$W/src-crypt/etc/hostname"
printf 'A file inside LUKS2 inside an LV on a whole-disk PV.\n' > "$W/src-crypt/data/note.txt"
pattern 1500000 13 > "$W/src-crypt/data/payload.bin"
ln -s ../data/note.txt "$W/src-crypt/etc/note-link"
printf 'LVM on LUKS on an LV\n' > "$W/src-nested/README"
pattern 2500000 29 > "$W/src-nested/srv/app/state.db"
mkdir "$W/src-nested/srv/empty"
manifest "$W/src-crypt" stacks-crypt.tsv
manifest "$W/src-nested" stacks-nested.tsv

# cryptlv: ext4 (11 MiB of its 12), then encrypted in place.
truncate -s 12M "$W/cryptlv.img"
mkfs.ext4 -q -F -b 1024 -U 7a7a7a7a-1111-4222-8333-444444444444 -L crypt -d "$W/src-crypt" "$W/cryptlv.img" 11M
cp "$W/cryptlv.img" "$W/cryptlv.plain"
read -r c_off c_vk < <(luks_encrypt "$W/cryptlv.img")

# nestlv: a PV of innervg (22 MiB of its 24), datalv holding XFS, then encrypted in place.
mkdir -p "$W/src-empty"
truncate -s 16M "$W/datalv.xfs"
mkfs.xfs -q -f -m uuid=8b8b8b8b-2222-4333-8444-555555555555 -L nested "$W/datalv.xfs"
mount -o loop "$W/datalv.xfs" "$W/mnt"; cp -a "$W/src-nested/." "$W/mnt/"; umount "$W/mnt"
truncate -s 24M "$W/nestlv.img"
P=$(losetup -f --show --sizelimit $((23 << 20)) "$W/nestlv.img"); LOOPS+=("$P")
lvm_ pvcreate -q -u dddddd-1111-2222-3333-4444-5555-dddddd --norestorefile "$P"
lvm_ vgcreate -q -s 1M innervg "$P"
lvm_ lvcreate -q --activate n --zero n -n datalv -L 16M innervg
lvm_ lvs --segments --reportformat json --units b --nosuffix -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges innervg > "$W/ilvs.json"
lvm_ pvs --reportformat json --units b --nosuffix -o pv_name,pe_start,vg_extent_size "$P" > "$W/ipvs.json"
python3 ../lvm/place.py "$W/ilvs.json" "$W/ipvs.json" datalv "$W/datalv.xfs" "$P=$W/nestlv.img:0"
losetup -d "$P"; LOOPS=()
cp "$W/nestlv.img" "$W/nestlv.plain"
read -r n_off n_vk < <(luks_encrypt "$W/nestlv.img")

# The disk: one whole-disk PV of datavg.
truncate -s 40M "$W/stacks.img"
P=$(losetup -f --show "$W/stacks.img"); LOOPS+=("$P")
lvm_ pvcreate -q -u eeeeee-1111-2222-3333-4444-5555-eeeeee --norestorefile "$P"
lvm_ vgcreate -q -s 1M datavg "$P"
lvm_ lvcreate -q --activate n --zero n -n cryptlv -L 12M datavg
lvm_ lvcreate -q --activate n --zero n -n nestlv -L 24M datavg
lvm_ lvs --segments --reportformat json --units b --nosuffix -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges datavg > "$W/lvs.json"
lvm_ pvs --reportformat json --units b --nosuffix -o pv_name,pe_start,vg_extent_size "$P" > "$W/pvs.json"
cp "$W/stacks.img" "$W/stacks.plain"
# The plaintext bytes of each payload: the LV less the 1 MiB reencrypt reduced it by.
plainlen() { echo $(( $(stat -c %s "$W/$1.img") - (1 << 20) )); }
for lv in cryptlv nestlv; do
  python3 ../lvm/place.py "$W/lvs.json" "$W/pvs.json" $lv "$W/$lv.img" "$P=$W/stacks.img:0"
  # The committed disk: the same LUKS headers, each payload as plaintext (the original
  # volume's bytes, which the encryption shifted to the payload offset), but for the last
  # (1 MiB - offset) of the LV, beyond the device size reencrypt reduced it to, kept as
  # cryptsetup left them.
  off=$c_off; [ $lv = nestlv ] && off=$n_off
  python3 - "$W/$lv.img" "$W/$lv.plain" "$W/$lv.mixed" "$off" "$(plainlen $lv)" <<'PY'
import sys
enc = open(sys.argv[1], 'rb').read(); plain = open(sys.argv[2], 'rb').read()
off, n = int(sys.argv[4]), int(sys.argv[5])
open(sys.argv[3], 'wb').write(enc[:off] + plain[:n] + enc[off + n:])
PY
  python3 ../lvm/place.py "$W/lvs.json" "$W/pvs.json" $lv "$W/$lv.mixed" "$P=$W/stacks.plain:0"
done
losetup -d "$P"; LOOPS=()
# Where each LV starts on the disk (a linear LV of one segment): pe_start + first PE × 1 MiB.
lvstart() { python3 - "$W/lvs.json" "$W/pvs.json" "$1" <<'PY'
import json, sys
lvs = json.load(open(sys.argv[1]))["report"][0]["seg"]; pv = json.load(open(sys.argv[2]))["report"][0]["pv"][0]
s = next(s for s in lvs if s["lv_name"] == sys.argv[3])
pe = int(s["seg_pe_ranges"].split(":")[-1].split("-")[0])
print(int(pv["pe_start"]) + pe * int(pv["vg_extent_size"]))
PY
}
{
  printf '# volume\tpayload_offset\tpayload_length\tvolume_key\tsector_size\tciphertext_sha256\n'
  for lv in cryptlv nestlv; do
    vk=$c_vk; off=$c_off; [ $lv = nestlv ] && { vk=$n_vk; off=$n_off; }
    start=$(lvstart $lv); len=$(plainlen $lv)
    sha=$(python3 -c 'import hashlib, sys; f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); print(hashlib.sha256(f.read(int(sys.argv[3]))).hexdigest())' "$W/$lv.img" "$off" "$len")
    printf 'disk/datavg/%s\t%s\t%s\t%s\t512\t%s\n' $lv $((start + off)) $len "$vk" "$sha"
  done
  printf '# sha256 of the whole disk as cryptsetup and LVM left it\ndisk\t%s\n' "$(sha256sum < "$W/stacks.img" | cut -d' ' -f1)"
} > stacks.tsv
zstd -19 --long -q -f "$W/stacks.plain" -o stacks.img.zst

# ---- fslogix.vhd ----
mkdir -p "$W/src-profile/Documents" "$W/src-profile/Desktop" "$W/src-profile/AppData/Local/Cache"
printf 'Quarterly report, draft 3.\n' > "$W/src-profile/Documents/report.txt"
pattern 300000 41 > "$W/src-profile/Documents/budget.xlsx"
printf 'call the bank\n' > "$W/src-profile/Desktop/notes with spaces.txt"
pattern 3145728 7 > "$W/src-profile/AppData/Local/Cache/big.bin"
: > "$W/src-profile/AppData/Local/empty.dat"
manifest "$W/src-profile" fslogix-profile.tsv
truncate -s 20M "$W/profile.raw"
sgdisk -U 5f5f5f5f-1111-4222-8333-444444444444 -n 1:2048:0 -t 1:0700 -c 1:Profile "$W/profile.raw" >/dev/null
pstart=$(( $(sgdisk -i 1 "$W/profile.raw" | awk '/First sector/ {print $3}') * 512 ))
pend=$(( ($(sgdisk -i 1 "$W/profile.raw" | awk '/Last sector/ {print $3}') + 1) * 512 ))
truncate -s $((pend - pstart)) "$W/profile.ntfs"
mkntfs -F -Q -q -L Profile "$W/profile.ntfs" 2>/dev/null
ntfslabel -q --new-serial=0F510610A11CE000 "$W/profile.ntfs"
ntfs-3g "$W/profile.ntfs" "$W/mnt"; cp -r "$W/src-profile/." "$W/mnt/"; umount "$W/mnt"
dd if="$W/profile.ntfs" of="$W/profile.raw" bs=512 seek=$((pstart / 512)) conv=notrunc,sparse status=none
mkdir -p "$W/src-outer/Profiles/alice" "$W/src-outer/Profiles/bob"
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$W/profile.raw" "$W/src-outer/Profiles/alice/Profile_alice.vhdx"
printf 'FSLogix profile container share\n' > "$W/src-outer/Profiles/readme.txt"
printf 'not a disk image\n' > "$W/src-outer/Profiles/bob/Profile_bob.vhdx.lock"
manifest "$W/src-outer" fslogix-outer.tsv
truncate -s 34M "$W/outer.raw"
sgdisk -U 6a6a6a6a-1111-4222-8333-444444444444 -n 1:2048:0 -t 1:8300 -c 1:share "$W/outer.raw" >/dev/null
ostart=$(( $(sgdisk -i 1 "$W/outer.raw" | awk '/First sector/ {print $3}') * 512 ))
oend=$(( ($(sgdisk -i 1 "$W/outer.raw" | awk '/Last sector/ {print $3}') + 1) * 512 ))
truncate -s $((oend - ostart)) "$W/outer.ext4"
mkfs.ext4 -q -F -U 6b6b6b6b-1111-4222-8333-444444444444 -L share -d "$W/src-outer" "$W/outer.ext4"
dd if="$W/outer.ext4" of="$W/outer.raw" bs=512 seek=$((ostart / 512)) conv=notrunc,sparse status=none
qemu-img convert -f raw -O vpc -o subformat=dynamic "$W/outer.raw" "$W/fslogix.vhd"
zstd -19 --long -q -f "$W/fslogix.vhd" -o fslogix.vhd.zst
ls -l ./*.zst ./*.tsv
