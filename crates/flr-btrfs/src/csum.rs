//! The checksums Btrfs keeps over its superblock, tree blocks and data
//! sectors: crc32c (the default), xxhash64, sha256 and blake2b-256
//! (`mkfs.btrfs --csum`). The superblock's `csum_type` names the one used;
//! the stored value is the digest's first bytes in a 32-byte field
//! (crc32c and xxhash64 as little-endian integers).

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

/// A checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumType {
    /// CRC-32C (Castagnoli), 4 bytes.
    Crc32c,
    /// xxHash64 with seed 0, 8 bytes.
    XxHash64,
    /// SHA-256, 32 bytes.
    Sha256,
    /// BLAKE2b with a 256-bit digest, 32 bytes.
    Blake2b,
}

impl CsumType {
    /// The type from the superblock's `csum_type` field.
    pub(crate) fn from_raw(v: u16) -> Option<CsumType> {
        Some(match v {
            0 => CsumType::Crc32c,
            1 => CsumType::XxHash64,
            2 => CsumType::Sha256,
            3 => CsumType::Blake2b,
            _ => return None,
        })
    }

    /// Bytes of a stored checksum.
    pub fn size(self) -> usize {
        match self {
            CsumType::Crc32c => 4,
            CsumType::XxHash64 => 8,
            CsumType::Sha256 | CsumType::Blake2b => 32,
        }
    }

    /// The name `btrfs inspect-internal dump-super` prints.
    pub fn name(self) -> &'static str {
        match self {
            CsumType::Crc32c => "crc32c",
            CsumType::XxHash64 => "xxhash64",
            CsumType::Sha256 => "sha256",
            CsumType::Blake2b => "blake2b",
        }
    }

    /// The checksum of `data`, in its on-disk form (first `size()` bytes).
    pub(crate) fn compute(self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self {
            CsumType::Crc32c => out[..4].copy_from_slice(&crc32c::crc32c(data).to_le_bytes()),
            CsumType::XxHash64 => {
                out[..8].copy_from_slice(&twox_hash::XxHash64::oneshot(0, data).to_le_bytes())
            }
            CsumType::Sha256 => out.copy_from_slice(&sha2::Sha256::digest(data)),
            CsumType::Blake2b => out.copy_from_slice(&Blake2b::<U32>::digest(data)),
        }
        out
    }

    /// Whether `stored` (at least `size()` bytes) is the checksum of `data`.
    pub(crate) fn matches(self, data: &[u8], stored: &[u8]) -> bool {
        let n = self.size();
        stored.len() >= n && self.compute(data)[..n] == stored[..n]
    }
}

/// The hash Btrfs files a directory entry's name under (the `offset` of a
/// DIR_ITEM key): CRC-32C seeded with `!1` and without the final
/// inversion.
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    // crc32c_append(c, d) continues a finished CRC `c`, i.e. it runs the raw
    // register from `!c` and inverts at the end; a raw start of `!1` is
    // c = 1, and the final inversion is undone here.
    u64::from(!crc32c::crc32c_append(1, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let c = CsumType::Crc32c.compute(b"123456789");
        assert_eq!(u32::from_le_bytes([c[0], c[1], c[2], c[3]]), 0xE306_9283);
        let x = CsumType::XxHash64.compute(b"");
        assert_eq!(
            u64::from_le_bytes(x[..8].try_into().unwrap()),
            0xEF46_DB37_51D8_E999
        );
        assert!(CsumType::Sha256.matches(b"abc", &CsumType::Sha256.compute(b"abc")));
        assert!(!CsumType::Blake2b.matches(b"abc", &CsumType::Blake2b.compute(b"abd")));
        assert_eq!(CsumType::from_raw(4), None);
    }
}
