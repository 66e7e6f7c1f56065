//! Checksum fix-ups applied to a mutated image before it is parsed.
//!
//! A mutation inside a checksummed header would otherwise stop at the
//! checksum test every time, and the fields behind it would never be
//! fuzzed. The harness therefore recomputes the checksums of the headers
//! it knows (VHDX headers and region tables, GPT headers and entry arrays,
//! LUKS2 binary headers, md superblocks, thin-pool metadata blocks, the
//! XFS v5 superblock and log records), so that mutated fields reach the
//! parsers;
//! production code is unchanged and keeps checking them. The fix-ups
//! only touch structures whose signature is present.

use sha2::Digest;

use crate::sparse::SparseImage;

use flr_vhdx::crc32c;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Btrfs with crc32c checksums: the superblock copies, then every
/// node-size block of the image that carries the filesystem's metadata
/// UUID (a tree block).
pub(crate) fn btrfs(img: &mut SparseImage) {
    let primary = img.get(0x1_0000, 4096);
    if primary.len() != 4096 || &primary[0x40..0x48] != b"_BHRfS_M" {
        return;
    }
    if u16::from_le_bytes([primary[0xc4], primary[0xc5]]) != 0 {
        return;
    }
    let nodesize = le32(&primary, 0x94) as u64;
    if !nodesize.is_power_of_two() || !(4096..=65536).contains(&nodesize) {
        return;
    }
    let incompat = le64(&primary, 0xbc);
    let meta_fsid = if incompat & (1 << 10) != 0 {
        primary[0x23b..0x24b].to_vec()
    } else {
        primary[0x20..0x30].to_vec()
    };
    for at in [0x1_0000u64, 0x400_0000, 0x40_0000_0000] {
        let mut b = img.get(at, 4096);
        if b.len() == 4096 && &b[0x40..0x48] == b"_BHRfS_M" {
            let c = crc32c(&b[32..]);
            b[..4].copy_from_slice(&c.to_le_bytes());
            img.put(at, &b[..4]);
        }
    }
    // Candidate blocks: node-aligned offsets inside the written chunks.
    let mut blocks = Vec::new();
    for (off, bytes) in img.chunks_mut().iter() {
        let first = off.div_ceil(nodesize) * nodesize;
        let end = off + bytes.len() as u64;
        let mut b = first;
        while b + 0x30 <= end && blocks.len() < 65536 {
            let rel = (b - off) as usize;
            if bytes[rel + 0x20..rel + 0x30] == meta_fsid[..] {
                blocks.push(b);
            }
            b += nodesize;
        }
    }
    for b in blocks {
        let mut node = img.get(b, nodesize as usize);
        if node.len() == nodesize as usize {
            let c = crc32c(&node[32..]);
            node[..4].copy_from_slice(&c.to_le_bytes());
            img.put(b, &node[..4]);
        }
    }
}

/// VHDX: both headers (4 KiB at 64 and 128 KiB) and both region tables
/// (64 KiB at 192 and 256 KiB).
pub(crate) fn vhdx(img: &mut SparseImage) {
    if img.get(0, 8) != b"vhdxfile" {
        return;
    }
    for (off, size, sig) in [
        (64u64 << 10, 4096usize, b"head"),
        (128 << 10, 4096, b"head"),
        (192 << 10, 65536, b"regi"),
        (256 << 10, 65536, b"regi"),
    ] {
        let mut b = img.get(off, size);
        if b.len() != size || &b[..4] != sig {
            continue;
        }
        b[4..8].fill(0);
        let c = crc32c(&b);
        img.put(off + 4, &c.to_le_bytes());
    }
}

/// GPT: the entry array's CRC, then the header's, for the primary header
/// (LBA 1 at 512 or 4096 bytes per sector) and the backup it points at.
pub(crate) fn gpt(img: &mut SparseImage) {
    for ss in [512u64, 4096] {
        let mut at = ss;
        for _ in 0..2 {
            let Some(backup) = gpt_header(img, at, ss) else {
                break;
            };
            at = backup;
        }
    }
}

fn gpt_header(img: &mut SparseImage, at: u64, ss: u64) -> Option<u64> {
    let mut h = img.get(at, ss as usize);
    if h.len() < 92 || &h[..8] != b"EFI PART" {
        return None;
    }
    let hsize = (le32(&h, 12) as usize).clamp(92, h.len());
    let entries_lba = le64(&h, 72);
    let count = u64::from(le32(&h, 80));
    let esize = u64::from(le32(&h, 84));
    let bytes = count.saturating_mul(esize);
    if bytes <= 1 << 20 {
        if let Some(off) = entries_lba.checked_mul(ss) {
            let crc = crc32fast::hash(&img.get(off, bytes as usize));
            h[88..92].copy_from_slice(&crc.to_le_bytes());
        }
    }
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h[..hsize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    img.put(at, &h[..92]);
    let backup = le64(&h, 32).checked_mul(ss)?;
    (backup != at).then_some(backup)
}

const LUKS2_BIN: usize = 4096;

/// LUKS2: the SHA-256 of each binary header and its JSON area (primary at
/// 0, secondary at the primary's header size).
pub(crate) fn luks2(img: &mut SparseImage) {
    let mut off = 0u64;
    for magic in [&b"LUKS\xba\xbe\x00\x02"[..], &b"SKUL\xba\xbe\x00\x02"[..]] {
        let Some(size) = luks2_header(img, off, magic) else {
            return;
        };
        off = size;
    }
}

fn luks2_header(img: &mut SparseImage, off: u64, magic: &[u8]) -> Option<u64> {
    let mut bin = img.get(off, LUKS2_BIN);
    if bin.len() < LUKS2_BIN || &bin[..8] != magic {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&bin[8..16]);
    let size = u64::from_be_bytes(s);
    if !(0x4000..=4 << 20).contains(&size) {
        return None;
    }
    let json = img.get(off + LUKS2_BIN as u64, size as usize - LUKS2_BIN);
    bin[448..512].fill(0);
    let mut h = sha2::Sha256::new();
    h.update(&bin);
    h.update(&json);
    img.put(off + 448, &h.finalize());
    Some(size)
}

/// A LUKS2 device whose JSON area holds `json`: a checksummed primary
/// header (its size the smallest that fits, at least 16 KiB) in front of
/// 16 MiB of zeros.
pub(crate) fn luks2_around_json(json: &[u8]) -> SparseImage {
    let json = &json[..json.len().min((4 << 20) - LUKS2_BIN - 1)];
    let size = ((LUKS2_BIN + json.len() + 1).div_ceil(4096) * 4096).max(0x4000) as u64;
    let mut img = SparseImage::zeros(size + (16 << 20));
    let mut bin = vec![0u8; LUKS2_BIN];
    bin[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x02");
    bin[8..16].copy_from_slice(&size.to_be_bytes());
    bin[16..24].copy_from_slice(&1u64.to_be_bytes());
    bin[72..78].copy_from_slice(b"sha256");
    bin[168..204].copy_from_slice(b"0c3f1ad4-7d6e-4a57-9d0b-2f3f4c2e1a11");
    img.put(0, &bin);
    img.put(LUKS2_BIN as u64, json);
    luks2(&mut img);
    img
}

/// md: the superblock of each member slice, wherever its version puts it
/// (1.1 at 0, 1.2 at 4 KiB, 1.0 near the end, 0.90 at the last 64 KiB
/// boundary less 64 KiB, in either byte order).
pub(crate) fn md(img: &mut SparseImage, slices: &[(u64, u64)]) {
    const MAGIC: u32 = 0xa92b_4efc;
    for &(base, len) in slices {
        let mut at = vec![0u64, 4096];
        if let Some(o) = len.checked_sub(8192) {
            at.push(o & !4095);
        }
        for off in at {
            let mut b = img.get(base + off, 4096);
            if b.len() < 256 || le32(&b, 0) != MAGIC || le32(&b, 4) != 1 {
                continue;
            }
            let n = (256 + 2 * le32(&b, 220) as usize).min(b.len());
            b[216..220].fill(0);
            let mut sum: u64 = 0;
            for w in b[..n - n % 4].chunks(4) {
                sum += u64::from(le32(w, 0));
            }
            if n % 4 >= 2 {
                sum += u64::from(u16::from_le_bytes([b[n - n % 4], b[n - n % 4 + 1]]));
            }
            let c = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
            img.put(base + off + 216, &c.to_le_bytes());
        }
        let Some(off) = (len & !0xffff).checked_sub(0x10000) else {
            continue;
        };
        let b = img.get(base + off, 4096);
        if b.len() < 4096 {
            continue;
        }
        let be = match (le32(&b, 0), u32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
            (MAGIC, _) => false,
            (_, MAGIC) => true,
            _ => continue,
        };
        let word = |i: usize| {
            let a = [b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]];
            if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        let sum: u64 = (0..1024)
            .filter(|&i| i != 38)
            .map(|i| u64::from(word(i)))
            .sum();
        let c = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
        let bytes = if be { c.to_be_bytes() } else { c.to_le_bytes() };
        img.put(base + off + 38 * 4, &bytes);
    }
}

/// Thin-pool metadata: every superblock found at a 4 KiB boundary, and
/// the B-tree nodes in the 256 blocks after it that name their own block.
pub(crate) fn thin(img: &mut SparseImage) {
    const MAGIC: u64 = 27_022_010;
    let mut supers = Vec::new();
    for (off, bytes) in img.chunks_mut().iter() {
        let end = off + bytes.len() as u64;
        let mut p = (off + 4095) & !4095;
        while p + 40 <= end {
            let i = (p - off) as usize;
            if le64(bytes, i + 32) == MAGIC {
                supers.push(p);
            }
            p += 4096;
        }
    }
    // The kernel's crc32c without the final inversion, xor'd per block kind.
    let csum = |b: &[u8], xor: u32| !crc32c(&b[4..]) ^ xor;
    for sb in supers {
        for i in 1..=256u64 {
            let b = img.get(sb + i * 4096, 4096);
            if b.len() == 4096 && matches!(le32(&b, 4), 1 | 2) && le64(&b, 8) == i {
                img.put(sb + i * 4096, &csum(&b, 121_107).to_le_bytes());
            }
        }
        let b = img.get(sb, 4096);
        if b.len() == 4096 {
            img.put(sb, &csum(&b, 160_774).to_le_bytes());
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// XFS: the primary superblock's CRC (v5), then the CRC of every log
/// record of the internal log (header, the extended headers its data needs,
/// and its data as written; v4 logs carry them too), so that mutated log
/// records reach the replay.
pub(crate) fn xfs(img: &mut SparseImage) {
    let sb = img.get(0, 512);
    if sb.len() < 512 || &sb[..4] != b"XFSB" {
        return;
    }
    let v5 = u16::from_be_bytes([sb[100], sb[101]]) & 0xf == 5;
    let sect = usize::from(u16::from_be_bytes([sb[102], sb[103]])).clamp(512, 32768);
    let mut s = img.get(0, sect);
    if v5 && s.len() == sect {
        s[224..228].fill(0);
        let c = crc32c(&s);
        img.put(224, &c.to_le_bytes());
    }
    let bs = u64::from(be32(&sb, 4));
    let agblocks = u64::from(be32(&sb, 84));
    let agblklog = u32::from(sb[124]).min(63);
    let logstart = u64::from_be_bytes(sb[48..56].try_into().unwrap_or([0; 8]));
    let ag = logstart.checked_shr(agblklog).unwrap_or(0);
    let agb = logstart & ((1u64 << agblklog) - 1);
    let Some(start) = ag
        .checked_mul(agblocks)
        .and_then(|b| b.checked_add(agb))
        .and_then(|b| b.checked_mul(bs))
    else {
        return;
    };
    let bbs = (u64::from(be32(&sb, 96)) * bs / 512).min(1 << 16);
    if logstart == 0 || bbs == 0 {
        return;
    }
    for blk in 0..bbs {
        let at = start + blk * 512;
        let h = img.get(at, 512);
        if h.len() < 512 || be32(&h, 0) != 0xFEED_BABE {
            continue;
        }
        let len = (be32(&h, 12) as usize).min(256 << 10);
        let size = be32(&h, 320) as usize;
        let hblks = if size > 32768 {
            size.div_ceil(32768).min(8)
        } else {
            1
        };
        let xheads = len.div_ceil(32768).min(hblks);
        let mut buf = h[..328].to_vec();
        buf[32..36].fill(0);
        for j in 1..xheads {
            buf.extend_from_slice(&img.get(at + j as u64 * 512, 260));
        }
        let mut data = Vec::with_capacity(len);
        for i in 0..len.div_ceil(512) as u64 {
            let b = (blk + hblks as u64 + i) % bbs;
            data.extend_from_slice(&img.get(start + b * 512, 512));
        }
        data.truncate(len);
        buf.extend_from_slice(&data);
        let c = crc32c(&buf);
        img.put(at + 32, &c.to_le_bytes());
    }
}
