//! Big-endian field readers over byte slices (XFS is big-endian on disk,
//! except its CRC fields). Out-of-range fields read as zero; callers
//! size-check the buffers they parse first.

pub(crate) fn be16(b: &[u8], o: usize) -> u16 {
    o.checked_add(2)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    o.checked_add(4)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    o.checked_add(8).and_then(|e| b.get(o..e)).map_or(0, |s| {
        u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    })
}

pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    o.checked_add(4)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    o.checked_add(2)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    o.checked_add(8).and_then(|e| b.get(o..e)).map_or(0, |s| {
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    })
}

/// Slice-by-16 tables: log replay checks every log record's CRC.
const CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The CRC32C of the concatenation of `parts`.
pub(crate) fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut d = CRC32C.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

/// Stores the CRC32C of `buf` (with the four bytes at `at` taken as zero)
/// at `at`, little-endian, as the kernel's write verifiers do.
pub(crate) fn set_crc(buf: &mut [u8], at: usize) {
    let Some(end) = at.checked_add(4).filter(|&e| e <= buf.len()) else {
        return;
    };
    buf[at..end].fill(0);
    let c = CRC32C.checksum(buf);
    buf[at..end].copy_from_slice(&c.to_le_bytes());
}

/// Whether the CRC32C stored little-endian at `at` matches `buf` (computed
/// with those four bytes taken as zero), as every v5 metadata block has it.
pub(crate) fn crc_ok(buf: &[u8], at: usize) -> bool {
    let Some(end) = at.checked_add(4).filter(|&e| e <= buf.len()) else {
        return false;
    };
    let mut d = CRC32C.digest();
    d.update(&buf[..at]);
    d.update(&[0u8; 4]);
    d.update(&buf[end..]);
    d.finalize() == le32(buf, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_crc() {
        let b = [1u8, 2, 3];
        assert_eq!(be16(&b, 0), 0x0102);
        assert_eq!(be16(&b, 2), 0);
        assert_eq!(be64(&b, usize::MAX), 0);
        // CRC-32C check value of "123456789" is 0xE3069283.
        let mut m = b"1234\x00\x00\x00\x0056789".to_vec();
        let mut d = CRC32C.digest();
        d.update(b"1234\x00\x00\x00\x0056789");
        m[4..8].copy_from_slice(&d.finalize().to_le_bytes());
        assert!(crc_ok(&m, 4));
        m[0] ^= 1;
        assert!(!crc_ok(&m, 4));
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
    }
}
