#!/usr/bin/env python3
"""Test-fixture generator for flr's container layer.

Written from the format specifications (Microsoft "Virtual Hard Disk Image
Format Specification" v1.0 and [MS-VHDX] v1.0), not from flr code, so that it
is an independent maker of the images flr must read.

  mkdiff.py pattern OUT SIZE
      the raw test disk: a recognisable, non-uniform pattern with all-zero
      regions (so dynamic images get unallocated blocks).
  mkdiff.py vhd  --parent P --parent-raw PR --out C --out-raw CR --writes SET
  mkdiff.py vhdx --parent P --parent-raw PR --out C --out-raw CR --writes SET
      a differencing child of P whose parent locators name P relatively
      (plus an absolute Windows path that does not exist here). SET names one
      of the built-in write sets below. CR is PR with the same writes applied:
      what the child's virtual disk must read as.

Writes are whole 512-byte sectors. A written sector has its bit set in the
child's sector bitmap, so it must read from the child even when the data
written is zeros.
"""

import argparse
import os
import struct
import uuid

SECTOR = 512
MIB = 1 << 20


# ---------------------------------------------------------------------------
# The raw pattern disk
# ---------------------------------------------------------------------------

def sector_pattern(lba, tag=b"base"):
    head = b"flr-container %s LBA %08d |" % (tag, lba)
    body = bytes(((lba * 7 + i * 13) % 251) for i in range(SECTOR - len(head)))
    return head + body


def make_pattern(path, size):
    """8 MiB-ish layout (sector = 512 bytes, 2048 sectors per MiB):
    MiB 0 all data; MiB 1 first half data; MiB 2-3 zero; MiB 4 a few sectors;
    MiB 5 stripes of 8 sectors; MiB 6 zero; MiB 7 last 512 sectors; and every
    sector past 8 MiB (the CHS tail) data."""
    nsec = size // SECTOR
    out = bytearray(size)
    for lba in range(nsec):
        mib, s = divmod(lba, 2048)
        data = (
            mib == 0
            or (mib == 1 and s < 1024)
            or (mib == 4 and 100 <= s < 104)
            or (mib == 5 and (s // 8) % 2 == 0)
            or (mib == 7 and s >= 1536)
            or mib >= 8
        )
        if data:
            out[lba * SECTOR:(lba + 1) * SECTOR] = sector_pattern(lba)
    with open(path, "wb") as f:
        f.write(out)


# ---------------------------------------------------------------------------
# Write sets (lba, data) applied by the differencing children
# ---------------------------------------------------------------------------

def tagged(lba, tag):
    return sector_pattern(lba, tag)


def write_set(name, nsec):
    """Named write sets. In the VHD sets every run of written sectors ends on
    a multiple of 8 sectors (a whole bitmap byte): libvhdi 20210425 misreads
    VHD bitmap bytes whose set bits do not reach the byte's last bit (it
    shifts without masking), and it is the oracle for those fixtures. The
    `vhdsub` set breaks that rule on purpose and is checked against the
    intended content only."""
    w = {}
    if name == "vhd1":
        # Block 0 (present in the parent): run starting mid-byte -> partial bitmap.
        for lba in range(10, 16):
            w[lba] = tagged(lba, b"vhd1")
        # Zeros written over parent data: must read as zeros, not the parent.
        for lba in range(50, 64):
            w[lba] = bytes(SECTOR)
        # Block 1 (a hole in the parent): sectors 4101..4119.
        for lba in range(4096 + 5, 4096 + 24):
            w[lba] = tagged(lba, b"vhd1")
        # Block 3: every sector -> full bitmap.
        for lba in range(3 * 4096, 4 * 4096):
            w[lba] = tagged(lba, b"vhd1")
    elif name == "vhd2":
        # Overwrites part of vhd1's change in block 0.
        for lba in (14, 15):
            w[lba] = tagged(lba, b"vhd2")
        # Block 2 (present only in the base): across the 1 MiB boundary.
        for lba in range(2 * 4096 + 2048 - 3, 2 * 4096 + 2048 + 8):
            w[lba] = tagged(lba, b"vhd2")
        # The last sector of the disk (in the partial last block).
        w[nsec - 1] = tagged(nsec - 1, b"vhd2")
    elif name == "vhdsub":
        # Runs that start and end inside bitmap bytes, single sectors, and
        # zeros over parent data.
        for lba in (10, 11, 12, 20, 33, 34, 4096 + 1, 3 * 4096 + 6):
            w[lba] = tagged(lba, b"vhdsub")
        for lba in (41, 42):
            w[lba] = bytes(SECTOR)
    elif name == "vhdx1":
        # Block 0 (1 MiB blocks; present in the parent): partial.
        for lba in range(10, 14):
            w[lba] = tagged(lba, b"vhdx1")
        for lba in range(50, 61):
            w[lba] = bytes(SECTOR)
        # Block 2 (a hole in the parent): partial.
        for lba in range(2 * 2048 + 7, 2 * 2048 + 21):
            w[lba] = tagged(lba, b"vhdx1")
        # Block 5: fully present.
        for lba in range(5 * 2048, 6 * 2048):
            w[lba] = tagged(lba, b"vhdx1")
        # Last sector of the disk (partial last block).
        w[nsec - 1] = tagged(nsec - 1, b"vhdx1")
    elif name == "vhdx2":
        for lba in (12, 13, 14):
            w[lba] = tagged(lba, b"vhdx2")
        # Block 3: a hole in the whole chain below; partial here.
        for lba in range(3 * 2048 + 2000, 3 * 2048 + 2048):
            w[lba] = tagged(lba, b"vhdx2")
        # Block 4 (partly data in the base): across the 1 MiB boundary.
        for lba in range(5 * 2048 - 2, 5 * 2048 + 2):
            w[lba] = tagged(lba, b"vhdx2")
    else:
        raise SystemExit("unknown write set " + name)
    return w


def apply_writes(parent_raw, out_raw, writes):
    with open(parent_raw, "rb") as f:
        data = bytearray(f.read())
    for lba, d in writes.items():
        data[lba * SECTOR:(lba + 1) * SECTOR] = d
    with open(out_raw, "wb") as f:
        f.write(data)
    return len(data)


# ---------------------------------------------------------------------------
# VHD (big-endian; one's-complement checksums)
# ---------------------------------------------------------------------------

def vhd_checksum(b, skip):
    s = sum(b[:skip]) + sum(b[skip + 4:])
    return (~s) & 0xFFFFFFFF


def read_vhd_footer(path):
    with open(path, "rb") as f:
        f.seek(-512, os.SEEK_END)
        ft = f.read(512)
    assert ft[:8] == b"conectix", "parent has no VHD footer"
    return {
        "current_size": struct.unpack(">Q", ft[48:56])[0],
        "geometry": ft[56:60],
        "timestamp": struct.unpack(">I", ft[24:28])[0],
        "unique_id": ft[68:84],
    }


def utf16le(s):
    return s.encode("utf-16-le")


def make_vhd_child(parent, out, writes, block_size=2 * MIB):
    p = read_vhd_footer(parent)
    size = p["current_size"]
    spb = block_size // SECTOR
    nblocks = (size + block_size - 1) // block_size
    bitmap_size = ((spb // 8 + SECTOR - 1) // SECTOR) * SECTOR
    pname = os.path.basename(parent)

    blocks = {}
    for lba, d in writes.items():
        blocks.setdefault(lba // spb, {})[lba % spb] = d

    header_off = 512
    bat_off = header_off + 1024
    bat_bytes = ((nblocks * 4 + SECTOR - 1) // SECTOR) * SECTOR
    loc_off = bat_off + bat_bytes
    locators = [
        (b"W2ru", utf16le(".\\" + pname)),
        (b"W2ku", utf16le("C:\\flr-fixtures\\missing\\" + pname)),
    ]
    loc_space = 512
    data_off = loc_off + loc_space * len(locators)

    bat = [0xFFFFFFFF] * nblocks
    body = bytearray()
    pos = data_off
    for b in sorted(blocks):
        bat[b] = pos // SECTOR
        bitmap = bytearray(bitmap_size)
        data = bytearray(block_size)
        for s, d in blocks[b].items():
            bitmap[s // 8] |= 0x80 >> (s % 8)  # MSB first
            data[s * SECTOR:(s + 1) * SECTOR] = d
        body += bitmap + data
        pos += bitmap_size + block_size

    uid = uuid.uuid4().bytes
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    struct.pack_into(">I", footer, 8, 2)  # features: reserved bit
    struct.pack_into(">I", footer, 12, 0x00010000)
    struct.pack_into(">Q", footer, 16, header_off)
    struct.pack_into(">I", footer, 24, p["timestamp"] + 1)
    footer[28:32] = b"flrt"
    struct.pack_into(">I", footer, 32, 0x00010000)
    footer[36:40] = b"Wi2k"
    struct.pack_into(">Q", footer, 40, size)
    struct.pack_into(">Q", footer, 48, size)
    footer[56:60] = p["geometry"]
    struct.pack_into(">I", footer, 60, 4)  # differencing
    footer[68:84] = uid
    struct.pack_into(">I", footer, 64, vhd_checksum(footer, 64))

    hdr = bytearray(1024)
    hdr[0:8] = b"cxsparse"
    struct.pack_into(">Q", hdr, 8, 0xFFFFFFFFFFFFFFFF)
    struct.pack_into(">Q", hdr, 16, bat_off)
    struct.pack_into(">I", hdr, 24, 0x00010000)
    struct.pack_into(">I", hdr, 28, nblocks)
    struct.pack_into(">I", hdr, 32, block_size)
    hdr[40:56] = p["unique_id"]
    struct.pack_into(">I", hdr, 56, p["timestamp"])
    name = pname.encode("utf-16-be")[:512]
    hdr[64:64 + len(name)] = name
    for i, (code, data) in enumerate(locators):
        o = 576 + 24 * i
        hdr[o:o + 4] = code
        struct.pack_into(">I", hdr, o + 4, loc_space)
        struct.pack_into(">I", hdr, o + 8, len(data))
        struct.pack_into(">Q", hdr, o + 16, loc_off + loc_space * i)
    struct.pack_into(">I", hdr, 36, vhd_checksum(hdr, 36))

    img = bytearray()
    img += footer
    img += hdr
    img += b"".join(struct.pack(">I", e) for e in bat).ljust(bat_bytes, b"\xff")
    for _, data in locators:
        img += data.ljust(loc_space, b"\0")
    assert len(img) == data_off
    img += body
    img += footer
    with open(out, "wb") as f:
        f.write(img)


# ---------------------------------------------------------------------------
# VHDX (little-endian; CRC-32C checksums; GUIDs in Microsoft byte order)
# ---------------------------------------------------------------------------

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def ms_guid(text):
    return uuid.UUID(text).bytes_le


BAT_GUID = ms_guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = ms_guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMS = ms_guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VDISK_SIZE = ms_guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = ms_guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SS = ms_guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SS = ms_guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOC = ms_guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_PARENT_TYPE = ms_guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")


def with_crc(buf, off=4):
    buf[off:off + 4] = b"\0\0\0\0"
    struct.pack_into("<I", buf, off, crc32c(bytes(buf)))
    return buf


def read_vhdx_parent(path):
    """The parent's virtual size and DataWriteGuid (current header)."""
    with open(path, "rb") as f:
        raw = f.read(320 * 1024)
        assert raw[:8] == b"vhdxfile"
        best = None
        for off in (64 * 1024, 128 * 1024):
            h = bytearray(raw[off:off + 4096])
            stored = struct.unpack("<I", h[4:8])[0]
            if h[:4] != b"head" or crc32c(bytes(h[:4] + b"\0\0\0\0" + h[8:])) != stored:
                continue
            seq = struct.unpack("<Q", h[8:16])[0]
            if best is None or seq > best[0]:
                best = (seq, bytes(h[32:48]))
        assert best, "parent has no valid header"
        rt = raw[192 * 1024:256 * 1024]
        assert rt[:4] == b"regi"
        n = struct.unpack("<I", rt[8:12])[0]
        meta_off = None
        for i in range(n):
            e = rt[16 + 32 * i:48 + 32 * i]
            if e[:16] == METADATA_GUID:
                meta_off = struct.unpack("<Q", e[16:24])[0]
        f.seek(meta_off)
        meta = f.read(64 * 1024)
        assert meta[:8] == b"metadata"
        count = struct.unpack("<H", meta[10:12])[0]
        size = None
        for i in range(count):
            e = meta[32 + 32 * i:64 + 32 * i]
            if e[:16] == VDISK_SIZE:
                o = struct.unpack("<I", e[16:20])[0]
                f.seek(meta_off + o)
                size = struct.unpack("<Q", f.read(8))[0]
    return size, best[1]


def guid_text(b):
    return "{" + str(uuid.UUID(bytes_le=b)) + "}"


def make_vhdx_child(parent, out, writes, block_size=MIB, logical=512):
    size, parent_dwg = read_vhdx_parent(parent)
    pname = os.path.basename(parent)
    spb = block_size // logical
    chunk_ratio = (1 << 23) * logical // block_size
    nblocks = (size + block_size - 1) // block_size
    nsb = (nblocks + chunk_ratio - 1) // chunk_ratio
    bat_entries = nsb * (chunk_ratio + 1)

    log_off, log_len = 1 * MIB, 1 * MIB
    meta_off, meta_len = 2 * MIB, 1 * MIB
    bat_off = 3 * MIB
    bat_len = ((bat_entries * 8 + MIB - 1) // MIB) * MIB
    pos = bat_off + bat_len

    blocks = {}
    for lba, d in writes.items():
        assert logical == SECTOR
        blocks.setdefault(lba // spb, {})[lba % spb] = d

    bat = [0] * bat_entries
    payload = []
    sb_data = {}
    # Sector bitmap blocks first, then payload blocks.
    for c in sorted({b // chunk_ratio for b in blocks}):
        sb_data[c] = (pos, bytearray(MIB))
        bat[c * (chunk_ratio + 1) + chunk_ratio] = pos | 6  # SB_BLOCK_PRESENT
        pos += MIB
    for b in sorted(blocks):
        sectors = blocks[b]
        idx = b + b // chunk_ratio
        data = bytearray(block_size)
        sb_pos, sb = sb_data[b // chunk_ratio]
        for s, d in sectors.items():
            data[s * logical:(s + 1) * logical] = d
            bit = (b % chunk_ratio) * spb + s
            sb[bit // 8] |= 1 << (bit % 8)  # LSB first
        full = len(sectors) == spb
        bat[idx] = pos | (6 if full else 7)  # FULLY / PARTIALLY_PRESENT
        payload.append((pos, data))
        pos += block_size
    total = pos

    img = bytearray(total)
    # File type identifier.
    img[0:8] = b"vhdxfile"
    creator = utf16le("flr testdata mkdiff.py")
    img[8:8 + len(creator)] = creator
    # Headers (equal contents, sequence numbers 1 and 2).
    dwg = uuid.uuid4().bytes
    fwg = uuid.uuid4().bytes
    for seq, off in ((1, 64 * 1024), (2, 128 * 1024)):
        h = bytearray(4096)
        h[0:4] = b"head"
        struct.pack_into("<Q", h, 8, seq)
        h[16:32] = fwg
        h[32:48] = dwg
        # LogGuid zero: the log is empty.
        struct.pack_into("<HHIQ", h, 64, 0, 1, log_len, log_off)
        img[off:off + 4096] = with_crc(h)
    # Region table and its copy.
    rt = bytearray(64 * 1024)
    rt[0:4] = b"regi"
    struct.pack_into("<I", rt, 8, 2)
    rt[16:32] = BAT_GUID
    struct.pack_into("<QII", rt, 32, bat_off, bat_len, 1)
    rt[48:64] = METADATA_GUID
    struct.pack_into("<QII", rt, 64, meta_off, meta_len, 1)
    with_crc(rt)
    img[192 * 1024:256 * 1024] = rt
    img[256 * 1024:320 * 1024] = rt

    # Metadata: table at the region start, items from 64 KiB.
    kv = [
        ("parent_linkage", guid_text(parent_dwg)),
        ("relative_path", ".\\" + pname),
        ("absolute_win32_path", "C:\\flr-fixtures\\missing\\" + pname),
    ]
    loc = bytearray(20 + 12 * len(kv))
    loc[0:16] = VHDX_PARENT_TYPE
    struct.pack_into("<HH", loc, 16, 0, len(kv))
    strings = bytearray()
    base = len(loc)
    for i, (k, v) in enumerate(kv):
        kb, vb = utf16le(k), utf16le(v)
        ko = base + len(strings)
        strings += kb
        vo = base + len(strings)
        strings += vb
        struct.pack_into("<IIHH", loc, 20 + 12 * i, ko, vo, len(kb), len(vb))
    loc += strings

    items = [
        (FILE_PARAMS, struct.pack("<II", block_size, 2), 0b100),  # HasParent
        (VDISK_SIZE, struct.pack("<Q", size), 0b110),
        (PAGE83, uuid.uuid4().bytes, 0b110),
        (LOGICAL_SS, struct.pack("<I", logical), 0b110),
        (PHYSICAL_SS, struct.pack("<I", 4096), 0b110),
        (PARENT_LOC, bytes(loc), 0b100),
    ]
    mt = bytearray(64 * 1024)
    mt[0:8] = b"metadata"
    struct.pack_into("<HH", mt, 8, 0, len(items))
    item_off = 64 * 1024
    item_data = bytearray()
    for i, (gid, data, flags) in enumerate(items):
        e = 32 + 32 * i
        mt[e:e + 16] = gid
        struct.pack_into("<IIII", mt, e + 16, item_off + len(item_data), len(data), flags, 0)
        item_data += data
        item_data += bytes((-len(item_data)) % 8)
    img[meta_off:meta_off + len(mt)] = mt
    img[meta_off + item_off:meta_off + item_off + len(item_data)] = item_data

    # BAT, sector bitmaps and payload.
    img[bat_off:bat_off + 8 * bat_entries] = b"".join(struct.pack("<Q", e) for e in bat)
    for _, (p, sb) in sb_data.items():
        img[p:p + MIB] = sb
    for p, data in payload:
        img[p:p + block_size] = data
    with open(out, "wb") as f:
        f.write(img)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["pattern", "vhd", "vhdx"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--parent")
    ap.add_argument("--parent-raw")
    ap.add_argument("--out")
    ap.add_argument("--out-raw")
    ap.add_argument("--writes")
    a = ap.parse_args()
    if a.kind == "pattern":
        make_pattern(a.args[0], int(a.args[1]))
        return
    nsec = os.path.getsize(a.parent_raw) // SECTOR
    writes = write_set(a.writes, nsec)
    apply_writes(a.parent_raw, a.out_raw, writes)
    if a.kind == "vhd":
        make_vhd_child(a.parent, a.out, writes)
    else:
        make_vhdx_child(a.parent, a.out, writes)


if __name__ == "__main__":
    main()
