#!/bin/bash
# Regenerates the LUKS fixtures. Needs e2fsprogs, qemu-img, cryptsetup (>= 2.4,
# no device-mapper needed: LUKS1 data is written by qemu's own LUKS driver,
# LUKS2 data by cryptsetup's offline reencryption), zstd.
# Outputs (committed): *.img.zst, pass-*.bin, *.payload.tsv (sha256 of the
# plaintext payload, from the plain image before encryption), files.tsv.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# Source tree (deterministic content).
mkdir -p "$W/src/dir"
printf 'hello luks\n' > "$W/src/hello.txt"
seq 1 3000 > "$W/src/dir/numbers.txt"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i*7+3)%256 for i in range(20000)))' > "$W/src/pattern.bin"
( cd "$W/src" && find . -type f | sort | while read -r f; do
    printf 'f\t%s\t%s\t%s\n' "${f#./}" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
  done ) > files.tsv

# Passphrases, exact bytes.
printf 'flr-luks1' > pass-luks1.bin                 # no newline
printf 'flr luks2 \xc3\xa9\n' > pass-luks2.bin      # trailing newline is part of the passphrase
# A 172-character ADE-style passphrase (base64 of 128 bytes).
python3 -c 'import base64,sys; sys.stdout.write(base64.b64encode(bytes((i*37+11)%256 for i in range(128))).decode())' > pass-ade.bin

mkfs() { # file size blocksize
  truncate -s "$2" "$1"
  mkfs.ext4 -q -F -b "$3" -N 16 -O ^has_journal,^resize_inode -U 6b1f0e1c-0d7e-4b7a-9a52-1b2f3c4d5e6f -E root_owner=0:0 -d "$W/src" "$1"
}
payload() { # name plainimage
  printf '%s\t%s\t%s\n' "$1" "$(stat -c %s "$2")" "$(sha256sum "$2" | cut -d' ' -f1)" >> payload.tsv
}
: > payload.tsv

# 1. LUKS1 by qemu-img: aes-xts-plain64, 256-bit key, sha256.
mkfs "$W/p1.img" 64K 1024
payload luks1-qemu-xts "$W/p1.img"
qemu-img convert -f raw -O luks --object secret,id=sec0,file=pass-luks1.bin \
  -o key-secret=sec0,iter-time=10,cipher-alg=aes-128,cipher-mode=xts,hash-alg=sha256 "$W/p1.img" "$W/luks1-qemu-xts.img"

# 2. LUKS2 in place (header in front, data shifted): argon2id, 4096-byte sectors, ext4 with 4 KiB blocks.
mkfs "$W/p2.img" 256K 4096
payload luks2-argon2id-4k "$W/p2.img"
cp "$W/p2.img" "$W/luks2-argon2id-4k.img"
truncate -s $((256*1024 + 352*1024)) "$W/luks2-argon2id-4k.img"
cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt --reduce-device-size 352k \
  --luks2-metadata-size 16k --luks2-keyslots-size 144k --cipher aes-xts-plain64 --key-size 256 \
  --pbkdf argon2id --pbkdf-memory 64 --pbkdf-force-iterations 4 --pbkdf-parallel 1 --sector-size 4096 \
  --key-file pass-luks2.bin --label flr-fixture "$W/luks2-argon2id-4k.img"

# 3. LUKS2 with a detached header (data offset 0): pbkdf2, aes-cbc-essiv:sha256 128-bit, 512-byte sectors, ADE-style passphrase.
mkfs "$W/p3.img" 64K 1024
payload luks2-detached-pbkdf2 "$W/p3.img"
cp "$W/p3.img" "$W/luks2-detached-pbkdf2.img"
truncate -s 160K "$W/luks2-detached-pbkdf2.hdr"
cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt --header "$W/luks2-detached-pbkdf2.hdr" \
  --luks2-metadata-size 16k --luks2-keyslots-size 128k --cipher aes-cbc-essiv:sha256 --key-size 128 \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256 \
  --key-file pass-ade.bin "$W/luks2-detached-pbkdf2.img"

# 4. An online encryption that never ran (cryptsetup reencrypt --init-only): the header carries
#    the online-reencrypt-v2 requirement and backup segments; flr must say why it cannot read it.
mkfs "$W/p4.img" 256K 1024
cp "$W/p4.img" "$W/luks2-reencrypt-unfinished.img"
truncate -s $((256*1024 + 1024*1024)) "$W/luks2-reencrypt-unfinished.img"
cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt --init-only --reduce-device-size 1M \
  --luks2-metadata-size 16k --luks2-keyslots-size 256k --cipher aes-xts-plain64 --key-size 256 \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file pass-luks1.bin "$W/luks2-reencrypt-unfinished.img"

# 5. LUKS1 cipher and hash variants, data written by qemu-img: name alg mode ivgen ivgen-hash(-) hash.
while read -r name alg mode ivgen ivhash hash; do
  mkfs "$W/$name.plain" 64K 1024
  payload "$name" "$W/$name.plain"
  o="key-secret=sec0,iter-time=10,cipher-alg=$alg,cipher-mode=$mode,ivgen-alg=$ivgen,hash-alg=$hash"
  [ "$ivhash" != - ] && o="$o,ivgen-hash-alg=$ivhash"
  qemu-img convert -f raw -O luks --object secret,id=sec0,file=pass-luks1.bin -o "$o" "$W/$name.plain" "$W/$name.img"
done <<'V'
luks1-qemu-cbc-essiv aes-256 cbc essiv sha256 sha256
luks1-qemu-cbc-plain64 aes-128 cbc plain64 - sha1
luks1-qemu-cbc-plain aes-128 cbc plain - sha256
luks1-qemu-xts512 aes-256 xts plain64 - sha512
V

# 6. LUKS1 headers written by cryptsetup luksFormat (headers only: cryptsetup cannot encrypt LUKS1
#    data without device-mapper); the oracle is the volume key cryptsetup dumps.
while read -r name cipher bits hash; do
  truncate -s 4M "$W/$name.img"
  cryptsetup luksFormat -q --type luks1 --cipher "$cipher" --key-size "$bits" --hash "$hash" \
    --iter-time 10 --key-file pass-luks1.bin "$W/$name.img"
  off=$(cryptsetup luksDump "$W/$name.img" | awk '/^Payload offset:/ {print $3}')
  truncate -s $((off * 512)) "$W/$name.img"
  # cryptsetup fills the seven unused keyslot areas with random bytes; zero them so the fixture
  # compresses (the header and the active slot are untouched).
  python3 - "$W/$name.img" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); h = f.read(592)
key_bytes = struct.unpack(">I", h[108:112])[0]
for i in range(8):
    active, _, _, mat, stripes = struct.unpack(">II32sII", h[208 + 48 * i:256 + 48 * i])
    if active != 0x00AC71F3:
        f.seek(mat * 512); f.write(bytes(-(-key_bytes * stripes // 512) * 512))
PY
done <<'V'
luks1-hdr-xts512-sha512 aes-xts-plain64 512 sha512
luks1-hdr-cbc-essiv-sha1 aes-cbc-essiv:sha256 256 sha1
V

# Volume keys as cryptsetup reads them (an oracle independent of flr).
vk() { # name passfile image [header]
  local h=()
  [ $# -ge 4 ] && h=(--header "$4")
  cryptsetup luksDump -q --dump-volume-key --key-file "$2" "${h[@]}" "$3" \
    | sed -n '/^MK dump:/,/^$/p;/^Volume key:/,/^$/p' | sed 's/^MK dump://;s/^Volume key://' | tr -d ' \t\n' > "$W/vk"
  printf '%s\t%s\n' "$1" "$(cat "$W/vk")" >> volume-keys.tsv
}
: > volume-keys.tsv
vk luks1-qemu-xts pass-luks1.bin "$W/luks1-qemu-xts.img"
vk luks2-argon2id-4k pass-luks2.bin "$W/luks2-argon2id-4k.img"
vk luks2-detached-pbkdf2 pass-ade.bin "$W/luks2-detached-pbkdf2.img" "$W/luks2-detached-pbkdf2.hdr"
for n in luks1-qemu-cbc-essiv luks1-qemu-cbc-plain64 luks1-qemu-cbc-plain luks1-qemu-xts512 \
  luks1-hdr-xts512-sha512 luks1-hdr-cbc-essiv-sha1; do
  vk "$n" pass-luks1.bin "$W/$n.img"
done

for f in luks1-qemu-xts.img luks2-argon2id-4k.img luks2-detached-pbkdf2.img luks2-detached-pbkdf2.hdr \
  luks2-reencrypt-unfinished.img luks1-qemu-cbc-essiv.img luks1-qemu-cbc-plain64.img luks1-qemu-cbc-plain.img \
  luks1-qemu-xts512.img luks1-hdr-xts512-sha512.img luks1-hdr-cbc-essiv-sha1.img; do
  zstd -19 --long -q -f "$W/$f" -o "$f.zst"
done
ls -l *.zst
