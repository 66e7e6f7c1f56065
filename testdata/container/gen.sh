#!/bin/bash
# Regenerates the container fixtures (VHD, VHDX) in this folder.
#
# Independent oracles only: the fixed/dynamic images are made by qemu-img from
# a raw pattern disk; the differencing children by mkdiff.py (written from the
# format specs, not from flr). Every image is read back by libvhdi
# (vhdimount) and, for the formats it reads, by qemu-img; expected.tsv records
# the sha256 of the virtual disk as those tools see it — never as flr sees it.
# The script stops when the tools disagree with each other or with the content
# the generator intended (raw pattern + the child's writes).
#
# One exception, vhd-subbyte.vhd: libvhdi 20210425 misreads VHD sector bitmap
# bytes whose set bits do not run to the byte's last bit (it shifts without
# masking), so for that image the expected sha256 is the intended content and
# libvhdi's (wrong) sha256 is recorded beside it for the record.
#
# Needs: qemu-img, libvhdi-utils (vhdiinfo, vhdimount), fuse, python3, zstd.
# Usage: testdata/container/gen.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
mnt=$(mktemp -d)
cleanup() { fusermount -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || true; rm -rf "$work" "$mnt"; }
trap cleanup EXIT
cd "$work"

# 8 MiB rounded up to the CHS geometry qemu's vpc driver uses (16388 sectors),
# so raw, VHD and VHDX all have exactly the same virtual size.
SIZE=8390656
python3 "$here/mkdiff.py" pattern raw.img $SIZE

qemu-img convert -f raw -O vpc  -o subformat=fixed,force_size=on raw.img vhd-fixed.vhd
qemu-img convert -f raw -O vpc  -o subformat=dynamic raw.img vhd-dynamic.vhd
qemu-img convert -f raw -O vhdx -o subformat=fixed raw.img vhdx-fixed.vhdx
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M raw.img vhdx-dynamic.vhdx

# Differencing chains: base <- diff1 <- diff2, each naming its parent by a
# relative locator (".\name") and an absolute Windows path that does not exist.
diff() { # kind parent parent_raw out writes
  python3 "$here/mkdiff.py" "$1" --parent "$2" --parent-raw "$3" --out "$4" --out-raw "${4%.*}.raw" --writes "$5"
}
diff vhd  vhd-dynamic.vhd   raw.img          vhd-diff1.vhd   vhd1
diff vhd  vhd-diff1.vhd     vhd-diff1.raw    vhd-diff2.vhd   vhd2
diff vhd  vhd-dynamic.vhd   raw.img          vhd-subbyte.vhd vhdsub
diff vhdx vhdx-dynamic.vhdx raw.img          vhdx-diff1.vhdx vhdx1
diff vhdx vhdx-diff1.vhdx   vhdx-diff1.raw   vhdx-diff2.vhdx vhdx2
cp raw.img base.raw

sha() { sha256sum "$1" | cut -d' ' -f1; }
# vhdimount exposes the whole chain: vhdi1 is the image given, or for a
# differencing image the deepest parent, and the last vhdiN the image itself.
libvhdi_sha() {
  vhdimount "$1" "$mnt" >/dev/null
  local last; last=$(ls "$mnt" | sort -V | tail -1)
  echo "$(sha "$mnt/$last") $(stat -c %s "$mnt/$last")"
  fusermount -u "$mnt" 2>/dev/null || umount "$mnt"
}

out="$here/expected.tsv"
{
  printf '# Virtual-disk sha256 of each fixture (see gen.sh). sha256 is the expected value;\n'
  printf '# libvhdi = vhdimount, qemu = qemu-img convert -O raw (- where qemu does not read the image).\n'
  printf '# image\tvirtual_size\tsha256\tlibvhdi_sha256\tqemu_sha256\tparent\n'
} > "$out"
for img in vhd-fixed.vhd vhd-dynamic.vhd vhdx-fixed.vhdx vhdx-dynamic.vhdx \
           vhd-diff1.vhd vhd-diff2.vhd vhd-subbyte.vhd vhdx-diff1.vhdx vhdx-diff2.vhdx; do
  vhdiinfo "$img" > "$here/$img.vhdiinfo.txt"
  read -r lv size < <(libvhdi_sha "$img")
  [ "$size" = "$SIZE" ] || { echo "$img: libvhdi virtual size $size, expected $SIZE" >&2; exit 1; }
  parent=-; q=-
  case "$img" in
    vhd-diff1.vhd|vhd-subbyte.vhd) parent=vhd-dynamic.vhd ;;
    vhd-diff2.vhd) parent=vhd-diff1.vhd ;;
    vhdx-diff1.vhdx) parent=vhdx-dynamic.vhdx ;;
    vhdx-diff2.vhdx) parent=vhdx-diff1.vhdx ;;
    *.vhdx) q=$(qemu-img convert -f vhdx -O raw "$img" q.raw && sha q.raw) ;;
    *.vhd)  q=$(qemu-img convert -f vpc -O raw "$img" q.raw && sha q.raw) ;;
  esac
  rm -f q.raw
  case "$img" in *diff*|*subbyte*) intended=$(sha "${img%.*}.raw") ;; *) intended=$(sha raw.img) ;; esac
  if [ "$q" != - ] && [ "$q" != "$lv" ]; then echo "qemu-img and libvhdi disagree on $img" >&2; exit 1; fi
  if [ "$img" = vhd-subbyte.vhd ]; then
    [ "$lv" != "$intended" ] || echo "note: libvhdi now reads $img as intended" >&2
    expected=$intended
  else
    [ "$lv" = "$intended" ] || { echo "libvhdi reads $img as $lv, intended $intended" >&2; exit 1; }
    expected=$lv
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$img" "$size" "$expected" "$lv" "$q" "$parent" >> "$out"
  zstd -19 --long -q -f "$img" -o "$here/$img.zst"
done
# The raw pattern disk itself, for byte-by-byte comparisons at odd offsets.
zstd -19 --long -q -f raw.img -o "$here/raw.img.zst"
printf 'raw.img\t%s\t%s\t-\t-\t-\n' "$SIZE" "$(sha raw.img)" >> "$out"
du -cb "$here"/*.zst | tail -1
echo "fixtures written to $here"
