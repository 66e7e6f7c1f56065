#!/bin/bash
# Regenerates the Windows-metadata fixtures in this folder (run as root: the
# NTFS image is filled through ntfs-3g over FUSE).
#
# ntfsmeta.img.zst: NTFS made by mkntfs, filled by ntfs-3g with
#   streams_interface=xattr, so `user.NAME` attributes are named $DATA
#   streams (alternate data streams); Windows attributes set through
#   system.ntfs_attrib_be; one security descriptor written through
#   system.ntfs_acl (ntfs-3g stores it in $Secure:$SDS and points the file's
#   $STANDARD_INFORMATION security_id at it); reparse points through
#   system.ntfs_reparse_data.
# fat.img.zst: FAT12 made by mformat, attributes set by mattrib.
#
# Oracles, all from what was written or read back by the tools (never flr):
#   streams.tsv   path, stream name, size, sha256 of the bytes given to setfattr
#   ntfs-attrs.tsv path, system.ntfs_attrib_be as getfattr reads it back,
#                 reparse tag (from system.ntfs_reparse_data) or -
#   sd.tsv        path, owner SID, group SID, SDDL: written here by hand
#                 from the same ACE list the bytes are packed from (Microsoft's
#                 SDDL short forms), and the SD bytes getfattr reads back
#                 (system.ntfs_acl); when python3-samba is installed its NDR
#                 parser must read those bytes back as the owner, group,
#                 control flags and ACEs meant (its SDDL writer is not the
#                 oracle: samba 4.17 maps FA to 0x1ff, Windows to 0x1f01ff)
#   fat-attrs.txt `mattrib` output for every file of the FAT image
set -euo pipefail
export LC_ALL=C TZ=UTC
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/flr-ntfsmeta-gen.XXXXXX)
trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
img="$work/ntfsmeta.img"; mnt="$work/mnt"; src="$work/src"
mkdir -p "$mnt" "$src"

truncate -s 8M "$img"
mkntfs -F -Q -q -L flr-ntfsmeta -c 4096 "$img" 2>/dev/null
ntfslabel -q --new-serial=0123456789ABCDEF "$img"
ntfs-3g -o streams_interface=xattr "$img" "$mnt"

# --- Alternate data streams ------------------------------------------------
# stream FILE NAME SOURCE: the bytes of SOURCE become stream NAME of FILE.
: > "$work/streams.tsv"
stream() {
  python3 -c "import os,sys; os.setxattr(sys.argv[1], 'user.' + sys.argv[2], open(sys.argv[3],'rb').read())" "$mnt/$1" "$2" "$3"
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(stat -c %s "$3")" "$(sha256sum < "$3" | cut -d' ' -f1)" >> "$work/streams.tsv"
}
printf 'main stream\n' > "$mnt/ads.txt"
printf '[ZoneTransfer]\r\nZoneId=3\r\nHostUrl=https://example.com/x.zip\r\n' > "$src/zone"
python3 -c "import sys; sys.stdout.write(''.join('%06d stream line %d\\n' % (i, i * 7919 % 10007) for i in range(30000))[:60000])" > "$src/big"
python3 -c "import sys; sys.stdout.write(''.join('%07d huge %d\\n' % (i, i * 104729 % 65521) for i in range(30000))[:300000])" > "$src/huge"
: > "$src/empty"
printf 'unicode stream\n' > "$src/uni"
printf 'escape attempt\n' > "$src/evil"
stream ads.txt Zone.Identifier "$src/zone"   # resident
stream ads.txt big "$src/big"                # non-resident, 15 clusters
stream ads.txt empty "$src/empty"            # zero-length stream
stream ads.txt 'naïve ü' "$src/uni"
stream ads.txt '..' "$src/evil"              # a side file must not escape DEST
mkdir "$mnt/folder"
printf 'a folder stream\n' > "$src/note"
stream folder note "$src/note"
# A compressed folder: the unnamed and the named stream of a file inside.
mkdir "$mnt/comp"
python3 -c "import os; os.setxattr('$mnt/comp', 'system.ntfs_attrib_be', bytes.fromhex('00000810'))"
head -c 65536 "$src/big" > "$mnt/comp/c.txt"
stream comp/c.txt big "$src/big"
printf 'no streams\n' > "$mnt/plain.txt"

# A stream larger than an xattr can be (64 KiB): written through
# streams_interface=windows, where FILE:NAME opens the stream.
umount "$mnt"; ntfs-3g -o streams_interface=windows "$img" "$mnt"
cp "$src/huge" "$mnt/ads.txt:huge"
printf '%s\t%s\t%s\t%s\n' ads.txt huge "$(stat -c %s "$src/huge")" "$(sha256sum < "$src/huge" | cut -d' ' -f1)" >> "$work/streams.tsv"
umount "$mnt"; ntfs-3g -o streams_interface=xattr "$img" "$mnt"

# --- Windows attributes ---------------------------------------------------
attr() { python3 -c "import os,sys; os.setxattr(sys.argv[1], 'system.ntfs_attrib_be', bytes.fromhex(sys.argv[2]))" "$mnt/$1" "$2"; }
for f in hidden system-hidden readonly notindexed offline; do printf '%s\n' "$f" > "$mnt/$f.txt"; done
attr hidden.txt 00000022
attr system-hidden.txt 00000026
attr readonly.txt 00000021
attr notindexed.txt 00002020
attr offline.txt 00001020
truncate -s 1M "$mnt/sparse.bin"; printf x | dd of="$mnt/sparse.bin" bs=1 seek=500000 conv=notrunc status=none
mkdir "$mnt/hidden-dir"; attr hidden-dir 00000012
# Reparse points: a symlink, a junction, a WOF-compressed file.
setrp() { python3 -c "import os,sys; os.setxattr(sys.argv[1], 'system.ntfs_reparse_data', bytes.fromhex(sys.argv[2]))" "$mnt/$1" "$2"; }
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
touch "$mnt/symlink"; setrp symlink "$(rp_link A000000C 'plain.txt' 'plain.txt' 1)"
mkdir "$mnt/junction"; setrp junction "$(rp_link A0000003 '\??\C:\Users' 'C:\Users')"
printf 'x\n' > "$mnt/wof.bin"
setrp wof.bin "$(python3 -c "import struct; d=struct.pack('<IIII',1,1,1,0); print((struct.pack('<IHH',0x80000017,len(d),0)+d).hex())")"

# --- A security descriptor ------------------------------------------------
# The ACEs, once: packed into bytes for ntfs-3g, and (by hand, below) the
# SDDL Windows would print for them.
printf 'acl\n' > "$mnt/acl.txt"
sd_hex=$(python3 - <<'PY'
import struct
def sid(s):
    p = s.split('-'); auth = int(p[2]); subs = [int(x) for x in p[3:]]
    return struct.pack('<BB', 1, len(subs)) + auth.to_bytes(6, 'big') + b''.join(struct.pack('<I', x) for x in subs)
user = 'S-1-5-21-1004336348-1177238915-682003330-1001'
aces = [  # type, flags, mask, trustee
    (0, 0x03, 0x001F01FF, 'S-1-5-18'),
    (0, 0x00, 0x001200A9, 'S-1-5-32-545'),
    (1, 0x10, 0x00040000, 'S-1-1-0'),
    (0, 0x0A, 0x10000000, user),
    (0, 0x00, 0x001301BF, 'S-1-5-11'),
]
body = b''
for t, f, m, s in aces:
    b = sid(s); body += struct.pack('<BBHI', t, f, 8 + len(b), m) + b
acl = struct.pack('<BBHHH', 2, 0, 8 + len(body), len(aces), 0) + body
owner, group = sid(user), sid('S-1-5-32-544')
control = 0x8000 | 0x1000 | 0x0400 | 0x0004  # self-relative, DACL protected, auto-inherited, present
o_own = 20; o_grp = o_own + len(owner); o_dacl = o_grp + len(group)
sd = struct.pack('<BBHIIII', 1, 0, control, o_own, o_grp, 0, o_dacl) + owner + group + acl
print(sd.hex())
PY
)
python3 -c "import os,sys; os.setxattr(sys.argv[1], 'system.ntfs_acl', bytes.fromhex(sys.argv[2]))" "$mnt/acl.txt" "$sd_hex"
sddl='O:S-1-5-21-1004336348-1177238915-682003330-1001G:BAD:PAI(A;OICI;FA;;;SY)(A;;0x1200a9;;;BU)(D;ID;WD;;;WD)(A;CIIO;GA;;;S-1-5-21-1004336348-1177238915-682003330-1001)(A;;0x1301bf;;;AU)'
back=$(getfattr --absolute-names -n system.ntfs_acl -e hex "$mnt/acl.txt" | sed -n 's/^system.ntfs_acl=0x//p')
[ "$back" = "$sd_hex" ] || { echo "ntfs-3g gave back another SD: $back" >&2; exit 1; }
if /usr/bin/python3 -c 'import samba.dcerpc.security' 2>/dev/null; then
  /usr/bin/python3 - "$sd_hex" <<'PY'
# samba's own NDR parser reads the bytes back: owner, group, control and
# every ACE must be the ones meant. (Its SDDL writer is not used as the
# oracle: samba 4.17 maps FA to 0x1ff, not Windows' 0x1f01ff.)
import sys
from samba.dcerpc import security
from samba.ndr import ndr_unpack
sd = ndr_unpack(security.descriptor, bytes.fromhex(sys.argv[1]))
user = 'S-1-5-21-1004336348-1177238915-682003330-1001'
assert (str(sd.owner_sid), str(sd.group_sid), sd.type) == (user, 'S-1-5-32-544', 0x9404), (str(sd.owner_sid), str(sd.group_sid), hex(sd.type))
got = [(a.type, a.flags, a.access_mask, str(a.trustee)) for a in sd.dacl.aces]
want = [(0, 3, 0x1f01ff, 'S-1-5-18'), (0, 0, 0x1200a9, 'S-1-5-32-545'), (1, 0x10, 0x40000, 'S-1-1-0'), (0, 0x0a, 0x10000000, user), (0, 0, 0x1301bf, 'S-1-5-11')]
assert got == want, got
print('samba reads the SD bytes back as the ACEs meant', file=sys.stderr)
PY
else
  echo 'NOTE: python3-samba not installed: SDDL not cross-checked by samba' >&2
fi
printf '%s\t%s\t%s\t%s\t%s\n' acl.txt S-1-5-21-1004336348-1177238915-682003330-1001 S-1-5-32-544 "$sddl" "$back" > "$work/sd.tsv"

# --- Read back what ntfs-3g stored -----------------------------------------
{ printf '# path\tsystem.ntfs_attrib_be (getfattr)\treparse tag or -\n'
  (cd "$mnt" && for p in ads.txt folder comp comp/c.txt plain.txt hidden.txt system-hidden.txt readonly.txt notindexed.txt offline.txt sparse.bin hidden-dir symlink junction wof.bin acl.txt; do
    # (ntfs-3g sometimes answers EIO for a WOF file on the first try)
    a=$( (getfattr -h --absolute-names -n system.ntfs_attrib_be -e hex "$p" 2>/dev/null || getfattr -h --absolute-names -n system.ntfs_attrib_be -e hex "$p") | sed -n 's/^system.ntfs_attrib_be=//p')
    r=$(getfattr -h --absolute-names -n system.ntfs_reparse_data -e hex "$p" 2>/dev/null | sed -n 's/^system.ntfs_reparse_data=0x//p' || true)
    if [ -n "$r" ]; then r=$(printf '0x%s%s%s%s' "${r:6:2}" "${r:4:2}" "${r:2:2}" "${r:0:2}"); else r=-; fi
    printf '%s\t%s\t%s\n' "$p" "$a" "$r"
  done); } > "$here/ntfs-attrs.tsv"
# Each stream as ntfs-3g returns it must be what was written.
grep -v $'\thuge\t' "$work/streams.tsv" | while IFS=$'\t' read -r p n size sum; do
  got=$(python3 -c "import os,sys,hashlib; print(hashlib.sha256(os.getxattr(sys.argv[1], 'user.' + sys.argv[2])).hexdigest())" "$mnt/$p" "$n")
  [ "$got" = "$sum" ] || { echo "stream $p:$n reads back wrong" >&2; exit 1; }
done
{ printf '# path\tstream\tsize\tsha256 (of the bytes given to setfattr)\n'; cat "$work/streams.tsv"; } > "$here/streams.tsv"
{ printf '# path\towner SID\tgroup SID\tSDDL\tSD bytes (getfattr system.ntfs_acl)\n'; cat "$work/sd.tsv"; } > "$here/sd.tsv"
umount "$mnt"
ntfsinfo -F /comp/c.txt "$img" 2>/dev/null | grep -q 'Attribute flags:.*0x0001'
zstd -q -19 --long -f "$img" -o "$here/ntfsmeta.img.zst"

# --- FAT -------------------------------------------------------------------
fat="$work/fat.img"
mformat -C -i "$fat" -f 1440 -v FLRATTR -N 12345678 ::
for f in plain hidden system readonly noarch all; do printf '%s\n' "$f" > "$work/$f.txt"; mcopy -i "$fat" -m "$work/$f.txt" ::/; done
mmd -i "$fat" ::/hiddir
mattrib -i "$fat" +h ::/hidden.txt
mattrib -i "$fat" +s ::/system.txt
mattrib -i "$fat" +r ::/readonly.txt
mattrib -i "$fat" -a ::/noarch.txt
mattrib -i "$fat" +h +s +r ::/all.txt
mattrib -i "$fat" +h ::/hiddir
mattrib -i "$fat" ::/*.txt ::/hiddir > "$here/fat-attrs.txt"
zstd -q -19 -f "$fat" -o "$here/fat.img.zst"
ls -la "$here"
