#!/bin/bash
# Regenerates the md fixtures (testdata/md/*.img.zst, arrays.tsv, examine.txt). Needs python3,
# mdadm (for --examine only: no md driver is needed or used) and zstd. See gen.py for why the
# members are written by a generator and how its layouts were checked.
#
# Arrays (16 KiB chunks unless said; each member's data area 256 KiB unless said):
#   RAID4      r4 (4 members, 1.2)
#   RAID5      r5-la left-asymmetric (4, 1.2), r5-ra right-asymmetric (4, 1.1), r5-ls
#              left-symmetric (3, 1.0, + a spare), r5-rs right-symmetric (5, 1.2), r5-p0
#              parity-first (3, 1.2), r5-pl parity-last (3, 1.2), r5-be left-symmetric
#              (3, 0.90 written big-endian, 32 KiB chunks, 320 KiB members)
#   RAID6      r6-ls left-symmetric (5, 1.2), r6-la left-asymmetric (6, 1.1, 192 KiB),
#              r6-rs right-symmetric (4, 1.0), r6-pf parity-first (4), the DDF layouts
#              r6-ddf-zr zero-restart (5), r6-ddf-nr N-restart (5, 1.1), r6-ddf-nc
#              N-continue (6), and RAID5 layouts with Q last: r6-la6 (5), r6-rs6 (5, 1.0),
#              r6-pf6 (4)
#   RAID10     r10-f2 far=2 (3), r10-o2 offset=2 (4), r10-n2 near=2 (3, 1.1), r10-n2f2
#              near=2,far=2 (5), r10-o3 offset=3 (3, 240 KiB), r10-n3 near=3 (4, 240 KiB)
#   RAID1      r1-10 (3 members, 1.0; member 2 stale: events 5 < 7, its data zeroed)
#   RAID0      r0-alt (256+128+192 KiB members, three zones, alternate layout 2, 1.2)
# mdadm --examine must find every checksum correct and state the array size gen.py
# computed; its output is kept in examine.txt (the tests compare its layout names with
# flr's). Sizes are chosen so that mdadm's estimate (from bytes) and the kernel's RAID10
# sizing (whole chunks divided by the far copies first) agree.
# Every array holds gen.py's pattern; arrays.tsv has the sha256 of each array's content,
# computed from the pattern before it is placed on the members.
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
if [ -n "${FLR_CORPUS_UNPACKED:-}" ]; then
  # The layout code against the member images the kernel wrote.
  python3 gen.py --check-corpus "$FLR_CORPUS_UNPACKED"
fi
python3 gen.py "$W"
: > "$W/examine.txt"
fail=0
tail -n +2 "$W/arrays.tsv" | while IFS=$'\t' read -r name members meta level layout chunk size stale spares sha; do
  for m in ${members//,/ } ${spares//,/ }; do
    [ "$m" = "-" ] && continue
    opt=(); [ "$meta" = "0.90be" ] && opt=(-e 0.swap)
    out=$(mdadm --examine "${opt[@]}" "$W/$m" 2>&1 | grep -v -e 'Time :' -e '^$')
    printf '%s\n' "$out" | sed "s#$W/##" >> "$W/examine.txt"
    grep -q 'Checksum : [0-9a-f]* - correct' <<<"$out" || { echo "$m: checksum not correct" >&2; exit 1; }
    want=$((size / 1024))
    if grep -q 'Array Size' <<<"$out"; then
      got=$(sed -n 's/.*Array Size : \([0-9]*\).*/\1/p' <<<"$out")
      [ "$got" = "$want" ] || { echo "$m: mdadm says array size $got KiB, gen.py $want" >&2; exit 1; }
    fi
  done
done
for f in "$W"/*.img; do zstd -q -19 -f "$f" -o "$(basename "$f").zst"; done
cp "$W/arrays.tsv" "$W/examine.txt" .
echo "md fixtures written; every superblock passed mdadm --examine"
