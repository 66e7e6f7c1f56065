#!/usr/bin/env python3
"""Writes the md fixtures: member images of arrays whose content is a known
pattern, laid out from a documented geometry, with md superblocks.

Why a generator: mdadm --create needs the kernel's md driver to create an
array, and the machines that make flr's fixtures have none (mdadm stops at
"unexpected failure opening /dev/md…" before writing a superblock). So this
script writes what mdadm and the kernel would: the array's bytes placed on
the members as the md(4) manual page and the kernel's md sources describe
each level (restated below in this script's own code, independent of
flr-md's), and a superblock per member. gen.sh then checks every superblock
with `mdadm --examine` (which reads member images without the driver):
checksum correct, level, layout name, chunk, sizes, roles, events. When the
third-party corpus is present, `gen.py --check-corpus DIR` places the
corpus's own pattern with this script's layout code and compares the
result with the member images mdadm and the kernel wrote (RAID5
left-symmetric, RAID10 near=2, RAID0 over unequal members): the layout code
is checked against the real kernel where an image exists.

The expected content of every array is the pattern (`pattern()` below),
hashed here before any placement: it does not come from flr.

Usage: gen.py OUTDIR      (writes OUTDIR/<array>-<role>.img and arrays.tsv)
       gen.py --check-corpus UNPACKED_CORPUS_DIR
       gen.py --place NAME LEVEL N CHUNK_KIB LAYOUT CONTENT OUTPREFIX
                 (metadata 1.2: an array holding the bytes of the file CONTENT, padded
                 with zeros to whole stripes; writes OUTPREFIX-<role>.img)
"""
import hashlib
import struct
import sys

SECTOR = 512
MAGIC = 0xA92B4EFC

# ---------------------------------------------------------------- pattern


def pattern(name, size):
    """The array's bytes: 512-byte sector s starts with 'NAME s' and is
    filled with (s * 7 + i) & 0xff."""
    out = bytearray(size)
    for s in range(size // SECTOR):
        fill = bytes(((s * 7 + i) & 0xFF) for i in range(SECTOR))
        head = ("%s sector %d\n" % (name, s)).encode()
        out[s * SECTOR:(s + 1) * SECTOR] = head + fill[len(head):]
    return bytes(out)


# ------------------------------------------------------------------ GF(2^8)

EXP = [0] * 512
LOG = [0] * 256
x = 1
for i in range(255):
    EXP[i] = EXP[i + 255] = x
    LOG[x] = i
    x <<= 1
    if x & 0x100:
        x ^= 0x11D


def gmul(a, b):
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def xor_bytes(a, b):
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "little") ^ int.from_bytes(b[:n], "little")
    return x.to_bytes(n, "little")


def gscale(c, data):
    t = bytes(gmul(c, v) for v in range(256))
    return data.translate(t)


# ----------------------------------------------------------------- layouts
# Parity placement per stripe, for n members. Returns (P member, Q member or
# None, [member of data block 0, 1, ...], [Q exponent of data block 0, 1, ...]).
# RAID5 (md(4)): left = parity starts on the last member and moves left one
# member per stripe; right = starts on the first and moves right; symmetric
# = the data blocks start just after the parity member and wrap round;
# asymmetric = the data blocks fill the members in order, skipping parity.
# RAID6 puts Q just after P (wrapping) and the data after Q; in the
# asymmetric layouts when P is on the last member Q wraps to member 0.
# Q's coefficients: g^j for the j-th data block counting members from just
# after Q, wrapping, skipping P and Q.


def parity_row(level, alg, n, stripe):
    if level == 4:
        p, q = n - 1, None
        data = list(range(n - 1))
    elif level == 5:
        d = n - 1
        r = stripe % n
        p = {0: d - r, 1: r, 2: d - r, 3: r, 4: 0, 5: d}[alg]
        q = None
        if alg in (0, 1, 5, 4):
            data = [m for m in range(n) if m != p]
        else:
            data = [(p + 1 + k) % n for k in range(d)]
    else:
        d = n - 2
        r = stripe % n
        if alg in (0, 1):
            p = n - 1 - r if alg == 0 else r
            q = 0 if p == n - 1 else p + 1
            data = [m for m in range(n) if m not in (p, q)]
        elif alg in (2, 3):
            p = n - 1 - r if alg == 2 else r
            q = (p + 1) % n
            data = [(p + 2 + k) % n for k in range(d)]
        elif alg == 4:  # parity first: P, Q, then the data
            p, q = 0, 1
            data = list(range(2, n))
        elif alg == 5:  # parity last: the data, then P, Q
            p, q = n - 2, n - 1
            data = list(range(n - 2))
        elif alg in (8, 9):
            # DDF "zero restart": right-asymmetric; "N restart": left-asymmetric
            # whose first stripe already has P on the second-last member.
            p = r if alg == 8 else n - 1 - (stripe + 1) % n
            q = 0 if p == n - 1 else p + 1
            data = [m for m in range(n) if m not in (p, q)]
        elif alg == 10:
            # DDF "N continue": P moves left, Q just before it, data after P.
            p = n - 1 - r
            q = (p - 1) % n
            data = [(p + 1 + k) % n for k in range(d)]
        elif alg in (16, 17, 18, 19, 20):
            # A RAID5 layout over the first n-1 members, Q on the last one.
            r5 = stripe % (n - 1)
            q = n - 1
            if alg == 20:
                p = 0
            else:
                p = (n - 2) - r5 if alg in (16, 18) else r5
            if alg in (18, 19):
                data = [(p + 1 + k) % (n - 1) for k in range(d)]
            else:
                data = [m for m in range(n - 1) if m != p]
        else:
            raise ValueError("layout %d not generated" % alg)
    coef = None
    if q is not None and level == 6 and alg in (8, 9, 10):
        # DDF numbers Q's terms by member.
        coef = list(data)
    elif q is not None:
        start = 0 if q == n - 1 else q + 1
        walk = [(start + j) % n for j in range(n)]
        order = [m for m in walk if m not in (p, q)]
        coef = [order.index(m) for m in data]
    return p, q, data, coef


def raid10_copies(near, far, offset, n, chunk, stride, c):
    """(member, byte) of every copy of chunk c: copies of a chunk sit on
    `near` consecutive members (rows of n chunks, wrapping to the next row);
    far copies repeat the whole at `stride` further, shifted by `near`
    members (offset layout: the next row, stride one chunk, rows spaced
    `far` apart)."""
    first = c * near
    row, dev = divmod(first, n)
    if offset:
        row *= far
    base = row * chunk
    out = []
    for _ in range(near):
        d, s = dev, base
        out.append((d, s))
        for _ in range(1, far):
            d = (d + near) % n
            s += stride
            out.append((d, s))
        dev += 1
        if dev == n:
            dev = 0
            base += chunk
    return out


def raid10_geometry(near, far, offset, n, chunk, dev_bytes):
    """The array size and far stride, sized as the kernel sizes RAID10."""
    per_dev = dev_bytes // chunk
    array_chunks = (per_dev // far) * n // near
    used = -(-(array_chunks * near * far) // n)
    stride = chunk if offset else (used // far) * chunk
    size = ((used // far) * n // near) * chunk
    return size, stride


def place(spec, content):
    """Member data areas (bytearrays of spec['dev_bytes']) for the array."""
    level, n, chunk, dev = spec["level"], spec["n"], spec["chunk"], spec["dev_bytes"]
    areas = [bytearray(dev) for _ in range(n)]
    if level == 1:
        for a in areas:
            a[: len(content)] = content
    elif level == 0:
        sizes = spec["sizes"]
        zones_at = 0
        prev = 0
        for end in sorted(set(sizes)):
            members = [m for m in range(n) if sizes[m] > prev]
            width = (end - prev) * len(members)
            for zc in range(width // chunk):
                a = zones_at + zc * chunk
                pick = a // chunk if spec.get("layout", 1) == 1 else zc
                m = members[pick % len(members)]
                off = prev + (zc // len(members)) * chunk
                areas[m][off:off + chunk] = content[a:a + chunk]
            zones_at += width
            prev = end
    elif level in (4, 5, 6):
        d = n - (2 if level == 6 else 1)
        for stripe in range(dev // chunk):
            p, q, data, coef = parity_row(level, spec.get("layout", 0), n, stripe)
            blocks = []
            for k in range(d):
                a = (stripe * d + k) * chunk
                blk = content[a:a + chunk]
                blocks.append(blk)
                areas[data[k]][stripe * chunk:(stripe + 1) * chunk] = blk
            pb = bytes(chunk)
            for b in blocks:
                pb = xor_bytes(pb, b)
            areas[p][stripe * chunk:(stripe + 1) * chunk] = pb
            if q is not None:
                qb = bytes(chunk)
                for b, e in zip(blocks, coef):
                    qb = xor_bytes(qb, gscale(EXP[e], b))
                areas[q][stripe * chunk:(stripe + 1) * chunk] = qb
    elif level == 10:
        near, far, offset = spec["near"], spec["far"], spec["offset"]
        size, stride = raid10_geometry(near, far, offset, n, chunk, dev)
        for c in range(size // chunk):
            for m, off in raid10_copies(near, far, offset, n, chunk, stride, c):
                areas[m][off:off + chunk] = content[c * chunk:(c + 1) * chunk]
    return areas


def array_size(spec):
    level, n, chunk, dev = spec["level"], spec["n"], spec["chunk"], spec["dev_bytes"]
    if level == 1:
        return dev
    if level == 0:
        return sum(spec["sizes"])
    if level in (4, 5):
        return (dev // chunk * chunk) * (n - 1)
    if level == 6:
        return (dev // chunk * chunk) * (n - 2)
    if level == 10:
        return raid10_geometry(spec["near"], spec["far"], spec["offset"], n, chunk, dev)[0]
    raise ValueError(level)


# ------------------------------------------------------------- superblocks


def csum_fold(total):
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def sb1(spec, role, data_offset, data_size, super_offset, events):
    """A 1.x superblock (256 bytes + roles), fields per md_p.h."""
    n = spec["n"] + len(spec.get("spares", []))
    roles = list(range(spec["n"])) + [0xFFFF] * len(spec.get("spares", []))
    b = bytearray(256 + 2 * n)
    lvl = {1: 1, 0: 0, 4: 4, 5: 5, 6: 6, 10: 10}[spec["level"]]
    layout = spec.get("layout", 0)
    feature = spec.get("feature", 0)
    struct.pack_into("<IIII", b, 0, MAGIC, 1, feature, 0)
    b[16:32] = spec["uuid"]
    name = ("flr:" + spec["name"]).encode()
    b[32:32 + len(name)] = name
    struct.pack_into("<Q", b, 64, 1700000000)
    struct.pack_into("<iIQII", b, 72, lvl, layout,
                     0 if spec["level"] == 0 else spec["dev_bytes"] // SECTOR,
                     spec["chunk"] // SECTOR if spec["level"] != 1 else 0, spec["n"])
    struct.pack_into("<QQQQ", b, 128, data_offset // SECTOR, data_size // SECTOR,
                     super_offset // SECTOR, 0)
    dev_uuid = hashlib.sha256(spec["uuid"] + bytes([role])).digest()[:16]
    struct.pack_into("<I", b, 160, role)
    b[168:184] = dev_uuid
    struct.pack_into("<QQQ", b, 192, 1700000001, events, 0xFFFFFFFFFFFFFFFF)
    struct.pack_into("<I", b, 220, n)
    for i, r in enumerate(roles):
        struct.pack_into("<H", b, 256 + 2 * i, r)
    total = 0
    for i in range(0, len(b) - len(b) % 4, 4):
        if i != 216:
            total += struct.unpack_from("<I", b, i)[0]
    if len(b) % 4 == 2:
        total += struct.unpack_from("<H", b, len(b) - 2)[0]
    struct.pack_into("<I", b, 216, csum_fold(total))
    return bytes(b)


def sb090(spec, role, events, big_endian):
    """A 0.90 superblock (1024 words in the creating host's byte order)."""
    e = ">" if big_endian else "<"
    w = [0] * 1024
    u = spec["uuid"]
    words = struct.unpack(">4I", u)
    w[0], w[1], w[2], w[3] = MAGIC, 0, 90, 0
    w[5], w[13], w[14], w[15] = words
    w[6] = 1700000000
    w[7] = {1: 1, 0: 0, 4: 4, 5: 5, 6: 6, 10: 10}[spec["level"]]
    w[8] = spec["dev_bytes"] // 1024
    w[9] = w[10] = spec["n"]
    w[11] = 9
    w[32] = 1700000001
    w[33] = 1  # clean
    w[34] = w[35] = spec["n"]
    w[64] = spec.get("layout", 0)
    w[65] = spec["chunk"]
    for i in range(spec["n"]):
        w[128 + 32 * i:128 + 32 * i + 5] = [i, 9, i, i, 6]
    w[992:997] = [role, 9, role, role, 6]
    b = bytearray(struct.pack(e + "1024I", *w))
    struct.pack_into(e + "Q", b, 39 * 4, events)
    total = sum(struct.unpack(e + "1024I", bytes(b)))
    struct.pack_into(e + "I", b, 38 * 4, csum_fold(total))
    return bytes(b)


def member_image(spec, role, area, events):
    meta = spec["meta"]
    dev = len(area)
    if meta in ("1.1", "1.2"):
        data_offset = 64 << 10
        at = 0 if meta == "1.1" else 4096
        img = bytearray(data_offset + dev)
        img[at:at + 4096] = sb1(spec, role, data_offset, dev, at, events).ljust(4096, b"\0")
        img[data_offset:] = area
    elif meta == "1.0":
        length = dev + 12288
        at = (length - 8192) & ~4095
        img = bytearray(length)
        img[:dev] = area
        img[at:at + 4096] = sb1(spec, role, 0, dev, at, events).ljust(4096, b"\0")
    else:
        length = ((dev + 0xFFFF) & ~0xFFFF) + 0x10000
        at = (length & ~0xFFFF) - 0x10000
        img = bytearray(length)
        img[:dev] = area
        img[at:at + 4096] = sb090(spec, role, events, meta == "0.90be")
    return bytes(img)


# ------------------------------------------------------------------ arrays

K = 1024


def spec(name, meta, level, n, chunk=16 * K, dev_bytes=256 * K, **kw):
    s = dict(name=name, meta=meta, level=level, n=n, chunk=chunk, dev_bytes=dev_bytes)
    s["uuid"] = hashlib.sha256(name.encode()).digest()[:16]
    s.update(kw)
    return s


ARRAYS = [
    spec("r4", "1.2", 4, 4, layout=5),
    spec("r5-la", "1.2", 5, 4, layout=0),
    spec("r5-ra", "1.1", 5, 4, layout=1),
    spec("r5-ls", "1.0", 5, 3, layout=2, spares=[3]),
    spec("r5-rs", "1.2", 5, 5, layout=3),
    spec("r5-p0", "1.2", 5, 3, layout=4),
    spec("r5-be", "0.90be", 5, 3, layout=2, chunk=32 * K, dev_bytes=320 * K),
    spec("r6-ls", "1.2", 6, 5, layout=2),
    spec("r6-la", "1.1", 6, 6, layout=0, dev_bytes=192 * K),
    spec("r6-rs", "1.0", 6, 4, layout=3),
    spec("r6-pf", "1.2", 6, 4, layout=4),
    spec("r6-ddf-zr", "1.2", 6, 5, layout=8),
    spec("r6-ddf-nr", "1.1", 6, 5, layout=9),
    spec("r6-ddf-nc", "1.2", 6, 6, layout=10),
    spec("r6-la6", "1.2", 6, 5, layout=16),
    spec("r6-rs6", "1.0", 6, 5, layout=19),
    spec("r6-pf6", "1.2", 6, 4, layout=20),
    spec("r5-pl", "1.2", 5, 3, layout=5),
    spec("r10-f2", "1.2", 10, 3, layout=0x201, near=1, far=2, offset=False),
    spec("r10-n2f2", "1.2", 10, 5, layout=0x202, near=2, far=2, offset=False),
    # 15 chunks per member: the kernel divides the chunks by the far copies first
    # (mdadm --examine estimates from the bytes), so a multiple of 3 keeps both equal.
    spec("r10-o3", "1.2", 10, 3, layout=0x10301, near=1, far=3, offset=True, dev_bytes=240 * K),
    spec("r10-n3", "1.2", 10, 4, layout=0x103, near=3, far=1, offset=False, dev_bytes=240 * K),
    spec("r10-o2", "1.2", 10, 4, layout=0x10201, near=1, far=2, offset=True),
    spec("r10-n2", "1.1", 10, 3, layout=0x102, near=2, far=1, offset=False),
    spec("r1-10", "1.0", 1, 3, chunk=0, stale=2),
    spec("r0-alt", "1.2", 0, 3, layout=2, feature=4096, sizes=[256 * K, 128 * K, 192 * K]),
]


def build(out):
    rows = []
    for s in ARRAYS:
        if s["level"] == 0:
            s["dev_bytes"] = max(s["sizes"])
        size = array_size(s)
        content = pattern(s["name"], size)
        digest = hashlib.sha256(content).hexdigest()
        areas = place(s, content)
        names = []
        for role, area in enumerate(areas):
            if s["level"] == 0:
                area = area[: s["sizes"][role]]
            events = 7
            if s.get("stale") == role:
                # Left behind: an older events count and different bytes.
                events = 5
                area = bytes(len(area))
            img = member_image(s, role, bytes(area), events)
            fn = "%s-%d.img" % (s["name"], role)
            with open("%s/%s" % (out, fn), "wb") as f:
                f.write(img)
            names.append(fn)
        for sp in s.get("spares", []):
            fn = "%s-spare.img" % s["name"]
            img = bytearray(member_image(s, sp, bytes(s["dev_bytes"]), 7))
            with open("%s/%s" % (out, fn), "wb") as f:
                f.write(img)
        rows.append("\t".join([
            s["name"], ",".join(names), s["meta"], str(s["level"]), str(s.get("layout", 0)),
            str(s["chunk"]), str(size), str(s.get("stale", "-")),
            ",".join("%s-spare.img" % s["name"] for _ in s.get("spares", [])) or "-", digest]))
    with open("%s/arrays.tsv" % out, "w") as f:
        f.write("# array\tmembers (role order)\tmetadata\tlevel\tlayout\tchunk\tsize\tstale role\tspares\tsha256 of the pattern\n")
        f.write("\n".join(rows) + "\n")


# ------------------------------------------------------- corpus cross-check


def dissect_pattern(size):
    data = bytearray(size)
    for i in range(1, 513):
        data[(i - 1) * 4096:i * 4096] = struct.pack("<H", i) * 2048
    return bytes(data)


def check_corpus(unpacked):
    d = unpacked + "/md/dissect-volume/"
    ok = True
    cases = [
        (spec("raid5", "1.2", 5, 3, chunk=512 * K, dev_bytes=2048 * K, layout=2), "md-raid5-%d.bin", 2048 * K),
        (spec("raid10", "1.2", 10, 2, chunk=512 * K, dev_bytes=2048 * K, near=2, far=1, offset=False), "md-raid10-%d.bin", 2048 * K),
        (spec("raid0", "1.2", 0, 3, chunk=512 * K, sizes=[2048 * K, 2048 * K, 1024 * K], layout=1), "md-raid0-%d.bin", 2048 * K),
    ]
    for s, fmt, data_offset in cases:
        if s["level"] == 0:
            s["dev_bytes"] = max(s["sizes"])
        content = dissect_pattern(array_size(s))
        for role, area in enumerate(place(s, content)):
            with open(d + fmt % (role + 1), "rb") as f:
                real = f.read()[data_offset:]
            n = s["sizes"][role] if s["level"] == 0 else s["dev_bytes"]
            same = real[:n] == bytes(area[:n])
            ok &= same
            print("%-8s member %d: %s" % (s["name"], role, "same bytes as the corpus" if same else "DIFFERS"))
    sys.exit(0 if ok else 1)


def place_file(name, level, n, chunk_kib, layout, content_file, prefix):
    """An array of `level` over `n` members (metadata 1.2) holding a file's
    bytes: for the fixtures that put a filesystem or an LVM PV on md."""
    chunk = chunk_kib * K
    content = open(content_file, "rb").read()
    data = {0: n, 1: 1, 4: n - 1, 5: n - 1, 6: n - 2}[level]
    per = -(-len(content) // data)
    dev = -(-per // chunk) * chunk
    s = spec(name, "1.2", level, n, chunk=chunk, dev_bytes=dev, layout=layout)
    if level == 0:
        s["sizes"] = [dev] * n
    size = array_size(s)
    content = content.ljust(size, b"\0")
    for role, area in enumerate(place(s, content)):
        with open("%s-%d.img" % (prefix, role), "wb") as f:
            f.write(member_image(s, role, bytes(area), 7))
    print("%s: %d bytes over %d members of %d" % (name, size, n, dev))


if __name__ == "__main__":
    if sys.argv[1] == "--check-corpus":
        check_corpus(sys.argv[2])
    elif sys.argv[1] == "--place":
        a = sys.argv[2:]
        place_file(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5], a[6])
    else:
        build(sys.argv[1])
