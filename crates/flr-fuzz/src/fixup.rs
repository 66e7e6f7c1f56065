//! Checksum fix-ups applied to a mutated image before it is parsed.
//!
//! A mutation inside a checksummed header would otherwise stop at the
//! checksum test every time, and the fields behind it would never be
//! fuzzed. The harness therefore recomputes the checksums of the headers
//! it knows (VHDX headers and region tables, GPT headers and entry arrays,
//! LUKS2 binary headers), so that mutated fields reach the parsers;
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
