#!/bin/bash
# Regenerates the md fixtures (testdata/md/*.img.zst, arrays.tsv, examine.txt). Needs python3,
# mdadm (for --examine only: no md driver is needed or used) and zstd. See gen.py for why the
# members are written by a generator and how its layouts were checked.
#
# Arrays (16 KiB chunks unless said; each member's data area 256 KiB):
#   r4      RAID4, 4 members, 1.2                  r5-la   RAID5 left-asymmetric, 4, 1.2
#   r5-ra   RAID5 right-asymmetric, 4, 1.1         r5-ls   RAID5 left-symmetric, 3, 1.0, + a spare
#   r5-rs   RAID5 right-symmetric, 5, 1.2          r5-p0   RAID5 parity-first, 3, 1.2
#   r5-be   RAID5 left-symmetric, 3, 0.90 written big-endian, 32 KiB chunks, 320 KiB members
#   r6-ls   RAID6 left-symmetric, 5, 1.2           r6-la   RAID6 left-asymmetric, 6, 1.1, 192 KiB
#   r6-rs   RAID6 right-symmetric, 4, 1.0          r10-f2  RAID10 far=2, 3 members, 1.2
#   r10-o2  RAID10 offset=2, 4, 1.2                r10-n2  RAID10 near=2, 3 members, 1.1
#   r1-10   RAID1, 3 members, 1.0; member 2 stale (events 5 < 7, its data zeroed)
#   r0-alt  RAID0 of 256+128+192 KiB members (three zones), alternate layout (2), 1.2
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
    printf '%s\n' "$out" >> "$W/examine.txt"
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
