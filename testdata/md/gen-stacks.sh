#!/bin/bash
# Regenerates the md stacks the scanner must open (testdata/md/stack-*): arrays whose content
# was made by independent tools, laid on members by gen.py (no md driver here: see gen.py).
# Needs python3, lvm2, e2fsprogs, cryptsetup (>= 2.4), gdisk, util-linux, zstd; runs as root.
#
#   lvm-on-md-{0,1,2}.img   RAID5 left-symmetric over 3 members (64 KiB chunks, 1.2) holding an
#                           LVM2 PV of VG mdvg, whose LV datalv holds ext4 (mkfs.ext4 -d):
#                           volume disk/md/lvmmd/mdvg/datalv; manifest lvm-on-md.tsv
#   crypt-md-{1,2}.img      Azure Disk Encryption's "RAID-on-crypt": two data disks, each GPT
#                           with one partition holding LUKS2 (cryptsetup reencrypt --encrypt,
#                           key pass-md.bin), whose plaintext is a member of a RAID0 (1.2, 64 KiB
#                           chunks) holding ext4: volume p1/md/cryptmd; manifest crypt-md.tsv.
#                           The LUKS payloads are committed as plaintext; crypt-md-{1,2}.tsv give
#                           offset, length, volume key and the sha256 of cryptsetup's ciphertext
#                           (see testdata/stack/gen.sh: the tests rebuild it with xts-mode).
set -euo pipefail
export LC_ALL=C TZ=UTC
cd "$(dirname "$0")"
W=$(mktemp -d /tmp/flr-md-stack.XXXXXX)
LOOPS=()
cleanup() {
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
export LVM_SUPPRESS_FD_WARNINGS=1
CFG='devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 } activation { udev_sync = 0 udev_rules = 0 } global { use_lvmpolld = 0 }'
lvm_() { "$@" --config "$CFG" --driverloaded n 2> >(grep -v -e 'Activation disabled' -e 'not zeroed' >&2); }
PASS=pass-md.bin
[ -f "$PASS" ] || printf 'raid on crypt\n' > "$PASS"
manifest() { # SRC OUT
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
    p=${f#./}
    if [ -L "$f" ]; then t=$(readlink "$f"); printf 'l\t%s\t%s\t%s\n' "$p" "${#t}" "$(printf %s "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$f" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; fi
  done) > "$2"
}
pattern() { python3 -c 'import sys; n,s=int(sys.argv[1]),int(sys.argv[2]); sys.stdout.buffer.write(bytes(((i*s+(i>>9)*7+s)%251) for i in range(n)))' "$1" "$2"; }

# ---- LVM on md ----
mkdir -p "$W/src-lvm/db" "$W/src-lvm/etc"
printf 'lvm on md raid5\n' > "$W/src-lvm/etc/motd"
pattern 1800000 17 > "$W/src-lvm/db/table.bin"
ln -s ../etc/motd "$W/src-lvm/db/motd-link"
manifest "$W/src-lvm" lvm-on-md.tsv
truncate -s 10M "$W/datalv.ext4"
mkfs.ext4 -q -F -b 1024 -U 9c9c9c9c-1111-4222-8333-444444444444 -L mdlv -d "$W/src-lvm" "$W/datalv.ext4"
truncate -s 12M "$W/pv.img"
P=$(losetup -f --show "$W/pv.img"); LOOPS+=("$P")
lvm_ pvcreate -q -u ffffff-1111-2222-3333-4444-5555-ffffff --norestorefile "$P"
lvm_ vgcreate -q -s 1M mdvg "$P"
lvm_ lvcreate -q --activate n --zero n -n datalv -L 10M mdvg
lvm_ lvs --segments --reportformat json --units b --nosuffix -o lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges mdvg > "$W/lvs.json"
lvm_ pvs --reportformat json --units b --nosuffix -o pv_name,pe_start,vg_extent_size "$P" > "$W/pvs.json"
python3 ../lvm/place.py "$W/lvs.json" "$W/pvs.json" datalv "$W/datalv.ext4" "$P=$W/pv.img:0"
losetup -d "$P"; LOOPS=()
python3 gen.py --place lvmmd 5 3 64 2 "$W/pv.img" "$W/lvm-on-md"
for r in 0 1 2; do zstd -19 -q -f "$W/lvm-on-md-$r.img" -o "stack-lvm-on-md-$r.img.zst"; done

# ---- RAID-on-crypt ----
mkdir -p "$W/src-crypt/data"
printf 'striped over two encrypted data disks\n' > "$W/src-crypt/README"
pattern 2200000 23 > "$W/src-crypt/data/blob.bin"
manifest "$W/src-crypt" crypt-md.tsv
truncate -s 8M "$W/array.ext4"
mkfs.ext4 -q -F -b 1024 -U 9d9d9d9d-1111-4222-8333-444444444444 -L cryptmd -d "$W/src-crypt" "$W/array.ext4"
python3 gen.py --place cryptmd 0 2 64 0 "$W/array.ext4" "$W/cm"
for k in 1 2; do
  m="$W/cm-$((k - 1)).img"
  mlen=$(stat -c %s "$m")
  cp "$m" "$W/luks$k.img"; truncate -s $((mlen + (1 << 20))) "$W/luks$k.img"
  cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt --cipher aes-xts-plain64 \
    --key-size 256 --sector-size 512 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256 \
    --luks2-metadata-size 16k --luks2-keyslots-size 256k --reduce-device-size 1M \
    --key-file "$PASS" "$W/luks$k.img" >/dev/null 2>&1
  off=$(cryptsetup luksDump "$W/luks$k.img" | awk '/^Data segments:/ {s=1} s && /offset:/ {print $2; exit}')
  vk=$(cryptsetup luksDump -q --dump-volume-key --key-file "$PASS" "$W/luks$k.img" \
    | sed -n '/^MK dump:/,/^$/p;/^Volume key:/,/^$/p' | sed 's/^MK dump://;s/^Volume key://' | tr -d ' \t\n')
  llen=$(stat -c %s "$W/luks$k.img")
  disk="$W/crypt-md-$k.img"
  truncate -s $((llen + (4 << 20))) "$disk"
  sgdisk -U "9e9e9e9e-1111-4222-8333-44444444444$k" -n "1:2048:+$((llen / 512))" -t 1:8300 -c 1:data "$disk" >/dev/null
  pstart=$(( $(sgdisk -i 1 "$disk" | awk '/First sector/ {print $3}') * 512 ))
  dd if="$W/luks$k.img" of="$disk" bs=512 seek=$((pstart / 512)) conv=notrunc status=none
  sha=$(python3 -c 'import hashlib, sys; f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); print(hashlib.sha256(f.read(int(sys.argv[3]))).hexdigest())' "$W/luks$k.img" "$off" "$mlen")
  {
    printf '# volume\tpayload_offset\tpayload_length\tvolume_key\tsector_size\tciphertext_sha256\n'
    printf 'p1\t%s\t%s\t%s\t512\t%s\n' $((pstart + off)) "$mlen" "$vk" "$sha"
    printf '# sha256 of the whole disk as cryptsetup left it\ndisk\t%s\n' "$(sha256sum < "$disk" | cut -d' ' -f1)"
  } > "crypt-md-$k.tsv"
  # Committed: the payload as plaintext (the md member), the rest as cryptsetup left it.
  python3 - "$disk" "$m" $((pstart + off)) <<'PY'
import sys
d = bytearray(open(sys.argv[1], 'rb').read()); m = open(sys.argv[2], 'rb').read(); at = int(sys.argv[3])
d[at:at + len(m)] = m
open(sys.argv[1], 'wb').write(d)
PY
  zstd -19 -q -f "$disk" -o "stack-crypt-md-$k.img.zst"
done
ls -l stack-*.zst *.tsv
