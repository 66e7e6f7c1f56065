//! MBR and GPT partition tables, read-only.
//!
//! [`read_table`] looks at the start of a disk and returns its partition
//! table, or `None` when the disk holds no table (a filesystem written
//! directly on the disk, or nothing recognisable).
//!
//! - GPT (a protective MBR with a type `0xEE` entry, or a GPT header without
//!   one): headers and entries are parsed with the `gpt` crate after flr has
//!   checked the header fields it relies on; 512- and 4096-byte logical
//!   sectors are tried (the hint first); when the primary header or its
//!   entries are damaged the backup at the end of the disk is used, with a
//!   warning. Partitions are numbered by their 1-based entry index, as Linux
//!   and `sgdisk` number them.
//! - MBR: the four primary entries (numbered 1-4 by slot) and the logical
//!   partitions of every extended partition (types `0x05`, `0x0F`, `0x85`),
//!   numbered 5, 6, … in chain order as Linux does. Extended containers are
//!   not returned.
//!
//! Boot sectors of filesystems (FAT, NTFS, exFAT) also end in `55 AA`; they
//! are recognised and not taken for an MBR.
//!
//! Problems that leave the rest of the table usable (a partition running
//! past the end of the disk, a broken or looping EBR chain, a missing backup
//! GPT header) are reported in [`PartitionTable::warnings`], each naming the
//! layer and the byte offset; problems that leave no usable table are a
//! [`PartError`].
#![deny(missing_docs)]

mod gpt_table;
mod layer;
mod mbr;
mod types;

use std::sync::Arc;

use flr_io::{IoError, ReadAt, Slice, Source};
use serde::Serialize;

pub use layer::{PartitionTableFormat, FORMAT};
pub use types::{gpt_type_name, is_extended, mbr_type_name};

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// GUID partition table.
    Gpt,
    /// DOS / MBR partition table.
    Mbr,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Gpt => "gpt",
            Scheme::Mbr => "mbr",
        })
    }
}

/// A partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    /// GPT or MBR.
    pub scheme: Scheme,
    /// The logical sector size the table was read with (512 or 4096).
    pub sector_size: u32,
    /// The GPT disk GUID (lowercase, hyphenated), or the MBR disk signature
    /// as 8 lowercase hex digits (as `blkid` shows it); `None` for an MBR
    /// whose signature is zero.
    pub disk_id: Option<String>,
    /// The partitions, in table order (GPT entry order; MBR primaries then
    /// logicals).
    pub partitions: Vec<Partition>,
    /// Problems found that did not stop the table from being read.
    pub warnings: Vec<String>,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// The partition number as Linux shows it: GPT 1-based entry index; MBR
    /// primaries 1-4 by slot, logicals 5, 6, ….
    pub number: u32,
    /// Byte offset of the partition from the start of the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the table says about it.
    pub kind: PartKind,
}

/// Table-specific facts about a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartKind {
    /// A GPT entry.
    Gpt {
        /// Partition type GUID, lowercase hyphenated.
        type_guid: String,
        /// Name of the type, when well known.
        type_name: Option<&'static str>,
        /// The partition's unique GUID, lowercase hyphenated.
        guid: String,
        /// The partition name (UTF-16 in the entry).
        name: String,
        /// The attribute bits.
        attributes: u64,
    },
    /// An MBR (primary or logical) entry.
    Mbr {
        /// The partition type byte.
        type_byte: u8,
        /// Name of the type, when well known.
        type_name: Option<&'static str>,
        /// Boot indicator `0x80` set.
        bootable: bool,
        /// A logical partition inside an extended partition.
        logical: bool,
    },
}

impl Partition {
    /// The name of the partition's type, when well known.
    pub fn type_name(&self) -> Option<&'static str> {
        match &self.kind {
            PartKind::Gpt { type_name, .. } | PartKind::Mbr { type_name, .. } => *type_name,
        }
    }

    /// The end of the partition (exclusive), in bytes from the start of the
    /// disk; `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.size)
    }

    /// The partition's bytes as a source of their own (a [`Slice`] of
    /// `disk` with layer name `partition N`). Fails when the partition does
    /// not fit inside `disk`.
    pub fn open(&self, disk: &Source) -> Result<Source, IoError> {
        let s = Slice::new(
            disk.clone(),
            self.start,
            self.size,
            format!("partition {}", self.number),
        )?;
        Ok(Arc::new(s))
    }
}

/// An error that leaves no usable partition table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// The table is there but too damaged to use.
    #[error("{layer}: corrupt partition table at byte offset {offset:#x}: {what}")]
    Corrupt {
        /// `mbr` or `gpt`.
        layer: &'static str,
        /// Byte offset on the disk of the damaged structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Reading the disk failed.
    #[error("{layer}: cannot read the partition table at byte offset {offset:#x}: {source}")]
    Io {
        /// `mbr` or `gpt`.
        layer: &'static str,
        /// Byte offset of the read.
        offset: u64,
        /// The error from below.
        #[source]
        source: IoError,
    },
}

/// Reads `len` bytes at `offset`, mapping errors to [`PartError::Io`].
fn read_vec(
    src: &dyn ReadAt,
    layer: &'static str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, PartError> {
    let mut buf = vec![0u8; len];
    src.read_exact_at(offset, &mut buf)
        .map_err(|source| PartError::Io {
            layer,
            offset,
            source,
        })?;
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Whether a 512-byte first sector is the boot sector of a volume (NTFS,
/// exFAT, ReFS, BitLocker, or FAT with a plausible BIOS parameter block)
/// rather than an MBR.
pub fn is_filesystem_boot_sector(sector: &[u8]) -> bool {
    let Some(oem) = sector.get(3..11) else {
        return false;
    };
    if [&b"NTFS    "[..], b"EXFAT   ", b"-FVE-FS-", b"ReFS\0\0\0\0"].contains(&oem) {
        return true;
    }
    looks_like_fat_bpb(sector)
}

/// A plausible FAT BIOS parameter block: a jump instruction, a power-of-two
/// sector size 512..=4096, a power-of-two cluster size, reserved sectors,
/// one or two FATs, a valid media byte and a sector count.
fn looks_like_fat_bpb(s: &[u8]) -> bool {
    if s.len() < 36 {
        return false;
    }
    let jump = s[0] == 0xE9 || (s[0] == 0xEB && s[2] == 0x90);
    let bps = le16(s, 11);
    let spc = s[13];
    let reserved = le16(s, 14);
    let fats = s[16];
    let media = s[21];
    let total16 = le16(s, 19);
    let total32 = le32(s, 32);
    jump && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && reserved >= 1
        && (fats == 1 || fats == 2)
        && (media == 0xF0 || media >= 0xF8)
        && (total16 != 0 || total32 != 0)
}

/// Reads the partition table of `src`.
///
/// `sector_size_hint` is the logical sector size the disk container
/// declares (VHDX does), if any: GPT tries it first; MBR uses it (else 512).
///
/// Returns `Ok(None)` when there is no partition table: no `55 AA`
/// signature and no GPT header, or a filesystem boot sector, or partition
/// entries that cannot be an MBR's.
pub fn read_table(
    src: &Source,
    sector_size_hint: Option<u32>,
) -> Result<Option<PartitionTable>, PartError> {
    if src.len() < 512 {
        return Ok(None);
    }
    let sector0 = read_vec(src.as_ref(), "mbr", 0, 512)?;
    let signed = sector0[510] == 0x55 && sector0[511] == 0xAA;
    let entries = mbr::parse_entries(&sector0);
    let protective = signed && entries.iter().any(|e| e.type_byte == 0xEE);
    if protective {
        return gpt_table::read(src, sector_size_hint, &entries).map(Some);
    }
    if !signed || is_filesystem_boot_sector(&sector0) || !mbr::entries_sane(&entries) {
        // No MBR. A GPT whose protective MBR was wiped is still a GPT, if
        // a header with a valid checksum says so.
        return Ok(gpt_table::read_without_pmbr(src, sector_size_hint));
    }
    let ss = sector_size_hint
        .filter(|s| matches!(s, 512 | 1024 | 2048 | 4096))
        .unwrap_or(512);
    mbr::read(src.as_ref(), ss, &sector0, &entries).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flr_io::MemSource;

    fn src(v: Vec<u8>) -> Source {
        Arc::new(MemSource::new(v))
    }

    #[test]
    fn small_or_blank_disks_have_no_table() {
        assert!(read_table(&src(vec![0; 100]), None).unwrap().is_none());
        assert!(read_table(&src(vec![0; 4096]), None).unwrap().is_none());
    }

    #[test]
    fn fat_boot_sector_is_not_an_mbr() {
        let mut s = vec![0u8; 1 << 20];
        s[0] = 0xEB;
        s[1] = 0x3C;
        s[2] = 0x90;
        s[3..11].copy_from_slice(b"mkfs.fat");
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4;
        s[14] = 1;
        s[16] = 2;
        s[17] = 0;
        s[18] = 2;
        s[19..21].copy_from_slice(&2048u16.to_le_bytes());
        s[21] = 0xF8;
        s[510] = 0x55;
        s[511] = 0xAA;
        assert!(read_table(&src(s.clone()), None).unwrap().is_none());
        // NTFS
        let mut n = vec![0u8; 1 << 20];
        n[3..11].copy_from_slice(b"NTFS    ");
        n[510] = 0x55;
        n[511] = 0xAA;
        n[0x1BE + 4] = 0x07;
        n[0x1BE + 8] = 1;
        n[0x1BE + 12] = 1;
        assert!(read_table(&src(n), None).unwrap().is_none());
    }
}
