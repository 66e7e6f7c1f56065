#!/bin/bash
# Regenerates the NTFS fixture in this folder (run as root: it mounts the
# image with ntfs-3g through FUSE). mkntfs formats it, ntfslabel sets a fixed
# serial, ntfs-3g fills it. Reparse points (symlink, junction, WSL symlink,
# WOF, dedup) are written as raw reparse data through ntfs-3g's
# system.ntfs_reparse_data attribute; the EFS file through efs_raw mode and
# user.ntfs.efsinfo (its bytes are not really encrypted; flr must refuse it
# anyway); the compressed directory through system.ntfs_attrib_be.
#
# Oracles, all from the source tree (a mirror of what was written) or from
# the tools: ntfs.manifest.tsv (kind path size sha256; for links the sha256
# of the target string flr must return), ntfs.attrs.tsv (path, mtime),
# ntfs.unreadable.tsv (paths whose data flr must refuse, with a reason
# keyword), ntfs.ntfsinfo.txt (ntfsinfo -m), ntfs.bootsector.txt (xxd of the
# boot sector: serial at 0x48), and checks below with ntfsinfo -F that the
# fragmented file really has an attribute list and the sparse file is sparse.
set -euo pipefail
export LC_ALL=C TZ=UTC
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/flr-ntfs-gen.XXXXXX)
trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
img="$work/ntfs.img"; src="$work/src"; mnt="$work/mnt"
mkdir -p "$src" "$mnt"

truncate -s 16M "$img"
mkntfs -F -Q -q -L flr-ntfs -c 4096 "$img" 2>/dev/null
ntfslabel -q --new-serial=1234567890ABCDEF "$img"

# same_in DIR...: run the commands of stdin in the image and in the mirror.
both() { for t in "$mnt" "$src"; do (cd "$t" && eval "$1"); done; }

# Reparse point buffers (tag, length, reserved, data), as hex.
rp_link() { # tag subst print [flags]
  python3 - "$@" <<'PY'
import struct, sys
tag = int(sys.argv[1], 16); s = sys.argv[2].encode('utf-16-le'); p = sys.argv[3].encode('utf-16-le')
if tag == 0xA000000C:
    d = struct.pack('<HHHHI', 0, len(s), len(s), len(p), int(sys.argv[4])) + s + p
else:
    d = struct.pack('<HHHH', 0, len(s), len(s) + 2, len(p)) + s + b'\0\0' + p + b'\0\0'
sys.stdout.write((struct.pack('<IHH', tag, len(d), 0) + d).hex())
PY
}
setrp() { python3 -c "import os,sys; os.setxattr(sys.argv[1], 'system.ntfs_reparse_data', bytes.fromhex(sys.argv[2]))" "$1" "$2"; }

ntfs-3g "$img" "$mnt"
both 'mkdir -p dir/nested/deep many café comp empty-dir'
both "printf 'hello, ntfs\n' > README.txt"
both "printf 'a file three directories down\n' > dir/nested/deep/file.txt"
both ': > empty'
both "awk 'BEGIN { for (i = 0; i < 7000; i++) printf \"%06d medium %d %d\\n\", i, (i * 7919) % 10007, (i * 104729) % 65521 }' > medium.txt"
both 'truncate -s 3M sparse.bin; printf head | dd of=sparse.bin conv=notrunc status=none
      printf middle | dd of=sparse.bin bs=1 seek=1048576 conv=notrunc status=none
      printf tail | dd of=sparse.bin bs=1 seek=$((3 * 1048576 - 4)) conv=notrunc status=none'
both 'for i in $(seq -w 1 300); do printf "entry %s\n" "$i" > "many/entry-$i.txt"; done'
both "printf 'naïve\n' > café/naïve-ü.txt; printf 'nihongo\n' > 日本語.txt; printf 'smile\n' > emoji-😀.txt"
both 'ln README.txt hardlink.txt'
both "printf 'long name\n' > LongFileName.txt"
# ntfs-3g makes Interix symlinks (system files holding IntxLNK\1 + target).
both 'ln -s dir/nested/deep/file.txt link-interix'
# Fragmentation: a 2 MiB file written one 4 KiB block at a time, last block
# first: 512 runs, more than a file record holds, so ntfs-3g spreads the
# run list over extension records with an attribute list.
both 'truncate -s 2M fragmented.bin; for k in $(seq 511 -1 0); do
        { printf "block %04d\n" $k; dd if=medium.txt bs=4096 skip=$((k % 60)) count=1 status=none; } | head -c 4096 \
          | dd of=fragmented.bin bs=4096 seek=$k conv=notrunc status=none; done'
# Compressed directory: files written inside are LZNT1-compressed (flr
# decompresses them; comp/small.txt stays resident and uncompressed).
python3 -c "import os; os.setxattr('$mnt/comp', 'system.ntfs_attrib_be', bytes.fromhex('00000810'))"
both "head -c 65536 medium.txt > comp/big.txt; printf 'tiny\n' > comp/small.txt"
# Alternate data stream (ntfs-3g maps user.* attributes to named streams):
# flr must return only the unnamed stream.
both "printf 'main stream\n' > ads.txt"
python3 -c "import os; os.setxattr('$mnt/ads.txt', 'user.hidden', b'secret stream')"
# A DOS 8.3 name beside the long one: listings must show the long name only.
python3 -c "import os; os.setxattr('$mnt/LongFileName.txt', 'system.ntfs_dos_name', b'LONGFI~1.TXT')"
# Reparse points. The mirror holds symlinks with the target flr must return.
touch "$mnt/reparse-rel" "$mnt/reparse-abs" "$mnt/wsl-link"; mkdir "$mnt/junction"
setrp "$mnt/reparse-rel" "$(rp_link A000000C 'dir\nested\deep\file.txt' 'dir\nested\deep\file.txt' 1)"
setrp "$mnt/reparse-abs" "$(rp_link A000000C '\??\C:\Windows\System32\drivers\etc\hosts' 'C:\Windows\System32\drivers\etc\hosts' 0)"
setrp "$mnt/junction" "$(rp_link A0000003 '\??\C:\Users' 'C:\Users')"
setrp "$mnt/wsl-link" "$(python3 -c "import struct; t=b'../../../etc/passwd'; d=struct.pack('<I',2)+t; print((struct.pack('<IHH',0xA000001D,len(d),0)+d).hex())")"
ln -s 'dir\nested\deep\file.txt' "$src/reparse-rel"
ln -s '\??\C:\Windows\System32\drivers\etc\hosts' "$src/reparse-abs"
ln -s '\??\C:\Users' "$src/junction"
ln -s '../../../etc/passwd' "$src/wsl-link"
# Files whose data sits behind other reparse tags: WOF and dedup.
both "printf 'not the real data\n' > wof.bin; printf 'not the real data either\n' > dedup.bin"
setrp "$mnt/wof.bin" "$(python3 -c "import struct; d=struct.pack('<IIII',1,1,1,0); print((struct.pack('<IHH',0x80000017,len(d),0)+d).hex())")"
setrp "$mnt/dedup.bin" "$(python3 -c "import struct; d=bytes(range(16)); print((struct.pack('<IHH',0x80000013,len(d),0)+d).hex())")"
# Timestamps (100 ns precision), applied last.
both "find . -mindepth 1 ! -name 'reparse-*' ! -name junction ! -name wsl-link ! -name wof.bin ! -name dedup.bin -exec touch -h -d '2021-03-04 05:06:07.1234567 +0000' {} +"
both "touch -d '1999-12-31 23:59:59.5 +0000' medium.txt; touch -d '2040-01-02 03:04:05.0000001 +0000' README.txt; touch -d '1960-06-01 00:00:00 +0000' empty"
umount "$mnt"

# EFS: efs_raw mode lets a raw EFS stream and its $EFS metadata be written.
ntfs-3g -o efs_raw "$img" "$mnt"
: > "$mnt/efs.txt"
python3 -c "
import os, struct
blob = bytearray(96); struct.pack_into('<IIII', blob, 0, len(blob), 0, 2, 0)
os.setxattr('$mnt/efs.txt', 'user.ntfs.efsinfo', bytes(blob))
open('$mnt/efs.txt', 'r+b').write(b'ciphertext-bytes' * 64)"
printf 'ciphertext-bytes%.0s' $(seq 64) > "$src/efs.txt"
umount "$mnt"

# Checks with the independent tools.
ntfsinfo -F /fragmented.bin "$img" 2>/dev/null | grep -q 'Dumping attribute \$ATTRIBUTE_LIST'
ntfsinfo -F /sparse.bin "$img" 2>/dev/null | grep -qi 'SPARSE'
ntfsinfo -F /comp/big.txt "$img" 2>/dev/null | grep -q 'Attribute flags:.*0x0001'
ntfsinfo -F /efs.txt "$img" 2>/dev/null | grep -q 'Attribute flags:.*0x4000'
[ "$(ntfscat "$img" /medium.txt | sha256sum)" = "$(sha256sum < "$src/medium.txt")" ]

manifest() {
  (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | sort | while IFS= read -r p; do
    if [ -L "$p" ]; then t=$(readlink "$p"); printf 'l\t%s\t%s\t%s\n' "$p" "$(printf '%s' "$t" | wc -c)" "$(printf '%s' "$t" | sha256sum | cut -d' ' -f1)"
    elif [ -d "$p" ]; then printf 'd\t%s\t0\t\n' "$p"
    else printf 'f\t%s\t%s\t%s\n' "$p" "$(stat -c %s "$p")" "$(sha256sum < "$p" | cut -d' ' -f1)"
    fi
  done)
}
zstd -q -19 --long -f "$img" -o "$here/ntfs.img.zst"
{ printf '# generated by gen.sh from the source mirror\n'; manifest "$src"; } > "$here/ntfs.manifest.tsv"
{ printf '# path mtime(seconds.nanoseconds), from the source mirror (100 ns precision)\n'
  (cd "$src" && find . -mindepth 1 ! -name 'reparse-*' ! -name junction ! -name wsl-link ! -name wof.bin ! -name dedup.bin ! -name efs.txt \
     | sed 's|^\./||' | sort | while IFS= read -r p; do stat -c $'%n\t%.9Y' -- "$p"; done); } > "$here/ntfs.attrs.tsv"
printf '# path reason-keyword: flr must list these as unreadable and refuse their data\nefs.txt\tEFS\nwof.bin\tWOF\ndedup.bin\tdedup\n' > "$here/ntfs.unreadable.tsv"
ntfsinfo -m "$img" 2>/dev/null > "$here/ntfs.ntfsinfo.txt" || true
xxd -l 512 "$img" > "$here/ntfs.bootsector.txt"
ls -la "$here"
