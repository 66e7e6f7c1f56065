//! GUID partition tables, parsed with the `gpt` crate.
//!
//! The `gpt` crate parses and checksums a header and reads and checksums the
//! entry array. flr checks the header fields that crate trusts (entry size,
//! entry count, where the array lies) before handing it the header, because
//! it asserts on an unusual entry size and allocates the whole array as the
//! header says. Its public header reader only reads at LBA 1 of the device
//! it is given, so a backup header is read through a [`Slice`] that starts
//! one sector before it.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use flr_io::{ReadOnlyCursor, ReaderCursor, Slice, Source};
use gpt::disk::LogicalBlockSize;
use gpt::header::{Header, HeaderError};

use crate::mbr::{check_on_disk, Entry};
use crate::types::gpt_type_name;
use crate::{PartError, PartKind, Partition, PartitionTable, Scheme};

/// The size of an entry the `gpt` crate can read.
const ENTRY_SIZE: u32 = 128;
/// At most this many entries (2 MiB of entry array); 128 is usual.
const MAX_ENTRIES: u32 = 16384;

/// The device handed to the `gpt` crate: a read-only cursor (writes fail)
/// with the `Debug` the crate's `DiskDevice` bound wants.
struct Dev(ReadOnlyCursor);

impl Dev {
    fn new(src: Source) -> Self {
        Dev(ReadOnlyCursor(ReaderCursor::new(src)))
    }
}

impl fmt::Debug for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flr read-only device")
    }
}

impl Read for Dev {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Dev {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Seek for Dev {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

/// What was found where a header should be.
enum HeaderAt {
    Valid(Header),
    /// No `EFI PART` signature.
    Absent,
    /// A signature, but unusable: why.
    Invalid(String),
}

fn lb(ss: u32) -> LogicalBlockSize {
    if ss == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    }
}

/// Reads and checks the header at `lba`.
fn header_at(src: &Source, ss: u32, lba: u64) -> HeaderAt {
    let ss64 = u64::from(ss);
    let Some(base) = lba.checked_sub(1).and_then(|l| l.checked_mul(ss64)) else {
        return HeaderAt::Absent;
    };
    // A window whose LBA 1 is `lba`.
    let window: Source = match Slice::new(src.clone(), base, 2 * ss64, "gpt header") {
        Ok(s) => Arc::new(s),
        Err(_) => return HeaderAt::Absent,
    };
    let mut dev = Dev::new(window);
    match gpt::header::read_header_from_arbitrary_device(&mut dev, lb(ss)) {
        Ok(h) => match check_header(&h, ss64, src.len(), lba) {
            Ok(()) => HeaderAt::Valid(h),
            Err(why) => HeaderAt::Invalid(why),
        },
        Err(HeaderError::InvalidGptSignature) => HeaderAt::Absent,
        Err(HeaderError::InvalidCRC32Checksum) => HeaderAt::Invalid("header CRC32 mismatch".into()),
        Err(e) => HeaderAt::Invalid(e.to_string()),
    }
}

/// The checks the `gpt` crate does not make, on a header whose CRC matched.
fn check_header(h: &Header, ss: u64, disk_len: u64, lba: u64) -> Result<(), String> {
    if h.current_lba != lba {
        return Err(format!(
            "header says it is at LBA {} but was read at LBA {lba}",
            h.current_lba
        ));
    }
    if h.header_size_le < 92 || u64::from(h.header_size_le) > ss {
        return Err(format!(
            "header size {} is not in 92..={ss}",
            h.header_size_le
        ));
    }
    if h.part_size != ENTRY_SIZE {
        return Err(format!(
            "partition entry size {} is not supported (only {ENTRY_SIZE})",
            h.part_size
        ));
    }
    if h.num_parts == 0 || h.num_parts > MAX_ENTRIES {
        return Err(format!(
            "partition entry count {} is not in 1..={MAX_ENTRIES}",
            h.num_parts
        ));
    }
    let table_len = u64::from(h.num_parts) * u64::from(ENTRY_SIZE);
    let table_sectors = table_len.div_ceil(ss);
    let start = h.part_start.checked_mul(ss);
    let end = start.and_then(|s| s.checked_add(table_len));
    match (start, end) {
        (Some(start), Some(end)) if end <= disk_len && h.part_start >= 1 => {
            // The array must not cover the header itself.
            if h.part_start <= lba && lba < h.part_start + table_sectors {
                return Err(format!(
                    "partition entry array at byte offset {start:#x} overlaps the header"
                ));
            }
            Ok(())
        }
        _ => Err(format!(
            "partition entry array at LBA {} ({table_len} bytes) is not inside the disk \
             ({disk_len:#x} bytes)",
            h.part_start
        )),
    }
}

/// Reads the entries a valid header points at (checksummed by the `gpt`
/// crate) and turns them into partitions.
fn entries(
    src: &Source,
    ss: u32,
    h: &Header,
    warnings: &mut Vec<String>,
) -> Result<Vec<Partition>, String> {
    let mut dev = Dev::new(src.clone());
    let parts =
        gpt::partition::file_read_partitions(&mut dev, h, lb(ss)).map_err(|e| e.to_string())?;
    let ss64 = u64::from(ss);
    let disk_len = src.len();
    let array_at = h.part_start * ss64; // checked in check_header
    let mut out = Vec::new();
    for (&number, p) in &parts {
        if p.part_type_guid.guid.is_nil() {
            continue; // an unused entry with leftover bytes
        }
        let entry_at = array_at + u64::from(number.saturating_sub(1)) * u64::from(ENTRY_SIZE);
        let extent = p
            .last_lba
            .checked_sub(p.first_lba)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ss64))
            .and_then(|size| Some((p.first_lba.checked_mul(ss64)?, size)));
        let Some((start, size)) = extent else {
            warnings.push(format!(
                "gpt: partition {number} (entry at byte offset {entry_at:#x}) has an impossible \
                 extent (LBA {}..={}); skipped",
                p.first_lba, p.last_lba
            ));
            continue;
        };
        if p.first_lba < h.first_usable || p.last_lba > h.last_usable {
            warnings.push(format!(
                "gpt: partition {number} (entry at byte offset {entry_at:#x}) lies outside the \
                 usable LBAs {}..={}",
                h.first_usable, h.last_usable
            ));
        }
        check_on_disk(warnings, "gpt", number, entry_at, start, size, disk_len);
        let type_guid = p.part_type_guid.guid.hyphenated().to_string();
        out.push(Partition {
            number,
            start,
            size,
            kind: PartKind::Gpt {
                type_name: gpt_type_name(&type_guid),
                type_guid,
                guid: p.part_guid.hyphenated().to_string(),
                name: p.name.clone(),
                attributes: p.flags,
            },
        });
    }
    Ok(out)
}

enum Outcome {
    Found(PartitionTable),
    /// No GPT signature at all with this sector size.
    NotHere,
    /// Signatures, but nothing usable.
    Damaged(PartError),
}

fn table(ss: u32, h: &Header, partitions: Vec<Partition>, warnings: Vec<String>) -> PartitionTable {
    PartitionTable {
        scheme: Scheme::Gpt,
        sector_size: ss,
        disk_id: Some(h.disk_guid.hyphenated().to_string()),
        partitions,
        warnings,
    }
}

fn try_sector_size(src: &Source, ss: u32) -> Outcome {
    let ss64 = u64::from(ss);
    let sectors = src.len() / ss64;
    if sectors < 3 {
        return Outcome::NotHere;
    }
    let last_lba = sectors - 1;
    let mut warnings = Vec::new();

    let primary = header_at(src, ss, 1);
    let primary_why = match &primary {
        HeaderAt::Valid(h) => match entries(src, ss, h, &mut warnings) {
            Ok(parts) => {
                let b = h.backup_lba;
                let backup_ok =
                    b <= last_lba && matches!(header_at(src, ss, b), HeaderAt::Valid(_));
                if !backup_ok {
                    warnings.push(format!(
                        "gpt: the backup header at LBA {b} (byte offset {:#x}) is missing or \
                         damaged; is the disk image truncated?",
                        b.saturating_mul(ss64)
                    ));
                }
                return Outcome::Found(table(ss, h, parts, warnings));
            }
            Err(why) => format!("its partition entries are unusable: {why}"),
        },
        HeaderAt::Invalid(why) => why.clone(),
        HeaderAt::Absent => "no GPT signature".to_string(),
    };
    warnings.clear();

    // The backup: where the primary says, else in the last sector.
    let mut candidates = Vec::new();
    if let HeaderAt::Valid(h) = &primary {
        if h.backup_lba <= last_lba {
            candidates.push(h.backup_lba);
        }
    }
    if !candidates.contains(&last_lba) {
        candidates.push(last_lba);
    }
    let mut backup_why = Vec::new();
    let mut any_signature = !matches!(primary, HeaderAt::Absent);
    for lba in candidates {
        let at = lba * ss64;
        match header_at(src, ss, lba) {
            HeaderAt::Valid(h) => {
                any_signature = true;
                let mut w = vec![format!(
                    "gpt: the primary header at byte offset {ss64:#x} is damaged ({primary_why}); \
                     using the backup header at byte offset {at:#x}"
                )];
                match entries(src, ss, &h, &mut w) {
                    Ok(parts) => return Outcome::Found(table(ss, &h, parts, w)),
                    Err(why) => backup_why.push(format!(
                        "backup header at byte offset {at:#x}: its partition entries are \
                         unusable: {why}"
                    )),
                }
            }
            HeaderAt::Invalid(why) => {
                any_signature = true;
                backup_why.push(format!("backup header at byte offset {at:#x}: {why}"));
            }
            HeaderAt::Absent => backup_why.push(format!("no backup header at byte offset {at:#x}")),
        }
    }
    if !any_signature {
        return Outcome::NotHere;
    }
    Outcome::Damaged(PartError::Corrupt {
        layer: "gpt",
        offset: ss64,
        what: format!(
            "{ss}-byte sectors: primary header: {primary_why}; {}",
            backup_why.join("; ")
        ),
    })
}

fn sizes(hint: Option<u32>) -> [u32; 2] {
    if hint == Some(4096) {
        [4096, 512]
    } else {
        [512, 4096]
    }
}

/// Reads the GPT of a disk whose sector 0 is a protective MBR.
pub(crate) fn read(
    src: &Source,
    hint: Option<u32>,
    pmbr: &[Entry; 4],
) -> Result<PartitionTable, PartError> {
    let mut first_err = None;
    for ss in sizes(hint) {
        match try_sector_size(src, ss) {
            Outcome::Found(mut t) => {
                let others = pmbr
                    .iter()
                    .filter(|e| e.type_byte != 0 && e.type_byte != 0xEE)
                    .count();
                if others > 0 {
                    t.warnings.push(format!(
                        "gpt: hybrid MBR: sector 0 also has {others} non-GPT entries, ignored"
                    ));
                }
                return Ok(t);
            }
            Outcome::NotHere => {}
            Outcome::Damaged(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(PartError::Corrupt {
        layer: "gpt",
        offset: 0x1BE,
        what: "protective MBR (type 0xEE) but no GPT header at LBA 1 or at the end of the disk \
               for 512- or 4096-byte sectors"
            .into(),
    }))
}

/// A GPT on a disk without a protective MBR: only when a header with a
/// valid checksum is there.
pub(crate) fn read_without_pmbr(src: &Source, hint: Option<u32>) -> Option<PartitionTable> {
    sizes(hint).into_iter().find_map(|ss| {
        // Only a valid primary counts here: without the protective MBR, a
        // lone backup header is too weak a sign.
        if !matches!(header_at(src, ss, 1), HeaderAt::Valid(_)) {
            return None;
        }
        match try_sector_size(src, ss) {
            Outcome::Found(mut t) => {
                t.warnings.push(
                    "gpt: sector 0 has no protective MBR (type 0xEE entry); the GPT header at \
                     LBA 1 is valid, so it is used"
                        .into(),
                );
                Some(t)
            }
            _ => None,
        }
    })
}
