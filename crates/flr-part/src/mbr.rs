//! DOS / MBR partition tables with extended-partition (EBR) chains.

use std::collections::HashSet;

use flr_io::ReadAt;

use crate::types::{is_extended, mbr_type_name};
use crate::{le32, PartError, PartKind, Partition, PartitionTable, Scheme};

/// Offset of the first partition entry in an MBR or EBR.
const TABLE_AT: usize = 0x1BE;
/// At most this many EBRs are followed in one extended partition.
const MAX_EBRS: usize = 1024;

/// One 16-byte partition entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Slot 0..4.
    pub(crate) slot: usize,
    /// Boot indicator byte.
    pub(crate) boot: u8,
    /// Partition type.
    pub(crate) type_byte: u8,
    /// First sector (relative to something that depends on the table).
    pub(crate) start: u32,
    /// Number of sectors.
    pub(crate) count: u32,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.type_byte == 0 || self.count == 0
    }

    /// Byte offset of this entry inside its sector.
    fn offset(&self) -> u64 {
        (TABLE_AT + 16 * self.slot) as u64
    }
}

/// The four entries of a 512-byte MBR or EBR.
pub(crate) fn parse_entries(sector: &[u8]) -> [Entry; 4] {
    std::array::from_fn(|slot| {
        let at = TABLE_AT + 16 * slot;
        Entry {
            slot,
            boot: sector.get(at).copied().unwrap_or(0),
            type_byte: sector.get(at + 4).copied().unwrap_or(0),
            start: le32(sector, at + 8),
            count: le32(sector, at + 12),
        }
    })
}

/// Whether the entries can be an MBR's: boot indicators 0 or 0x80, and no
/// used entry starting at sector 0 (over the MBR itself).
pub(crate) fn entries_sane(entries: &[Entry; 4]) -> bool {
    entries
        .iter()
        .all(|e| (e.boot == 0 || e.boot == 0x80) && (e.is_empty() || e.start != 0))
}

fn kind(e: &Entry, logical: bool) -> PartKind {
    PartKind::Mbr {
        type_byte: e.type_byte,
        type_name: mbr_type_name(e.type_byte),
        bootable: e.boot == 0x80,
        logical,
    }
}

/// Warns when `start..start+size` does not fit on the disk.
pub(crate) fn check_on_disk(
    warnings: &mut Vec<String>,
    layer: &str,
    number: u32,
    entry_at: u64,
    start: u64,
    size: u64,
    disk_len: u64,
) {
    match start.checked_add(size) {
        Some(end) if end <= disk_len => {}
        Some(end) => warnings.push(format!(
            "{layer}: partition {number} (entry at byte offset {entry_at:#x}) spans bytes \
             {start:#x}..{end:#x}, past the end of the disk ({disk_len:#x} bytes)"
        )),
        None => warnings.push(format!(
            "{layer}: partition {number} (entry at byte offset {entry_at:#x}) has an impossible \
             extent (start {start:#x}, size {size:#x})"
        )),
    }
}

/// Reads an MBR whose sector 0 (`sector0`, with `entries`) has already been
/// judged to be one.
pub(crate) fn read(
    src: &dyn ReadAt,
    ss: u32,
    sector0: &[u8],
    entries: &[Entry; 4],
) -> Result<PartitionTable, PartError> {
    let disk_len = src.len();
    let ss64 = u64::from(ss);
    let sig = le32(sector0, 440);
    let mut table = PartitionTable {
        scheme: Scheme::Mbr,
        sector_size: ss,
        disk_id: (sig != 0).then(|| format!("{sig:08x}")),
        partitions: Vec::new(),
        warnings: Vec::new(),
    };
    let mut extended = Vec::new();
    for e in entries {
        if e.is_empty() {
            continue;
        }
        if is_extended(e.type_byte) {
            extended.push(*e);
            continue;
        }
        // u32 sectors times a sector size of at most 4096 cannot overflow u64.
        let start = u64::from(e.start) * ss64;
        let size = u64::from(e.count) * ss64;
        let number = e.slot as u32 + 1;
        check_on_disk(
            &mut table.warnings,
            "mbr",
            number,
            e.offset(),
            start,
            size,
            disk_len,
        );
        table.partitions.push(Partition {
            number,
            start,
            size,
            kind: kind(e, false),
        });
    }
    let mut next_number = 5u32;
    for ext in &extended {
        follow_chain(src, ss64, ext, &mut next_number, &mut table);
    }
    Ok(table)
}

/// Follows the EBR chain of one extended partition, appending its logical
/// partitions. Every problem ends the chain with a warning; the logical
/// partitions found before it are kept.
fn follow_chain(
    src: &dyn ReadAt,
    ss: u64,
    ext: &Entry,
    next_number: &mut u32,
    table: &mut PartitionTable,
) {
    let disk_len = src.len();
    let base = u64::from(ext.start);
    let ext_end = base + u64::from(ext.count);
    let w = &mut table.warnings;
    let mut ebr = base;
    let mut seen = HashSet::new();
    for step in 0.. {
        let off = ebr * ss;
        if step >= MAX_EBRS {
            w.push(format!(
                "mbr: more than {MAX_EBRS} EBRs in the extended partition at byte offset \
                 {:#x}; stopped at the EBR at byte offset {off:#x}",
                base * ss
            ));
            return;
        }
        if !seen.insert(ebr) {
            w.push(format!(
                "mbr: the EBR chain loops back to the EBR at byte offset {off:#x}; stopped there"
            ));
            return;
        }
        let mut sector = [0u8; 512];
        if let Err(e) = src.read_exact_at(off, &mut sector) {
            w.push(format!(
                "mbr: cannot read the EBR at byte offset {off:#x} (disk is {disk_len:#x} bytes): {e}"
            ));
            return;
        }
        if sector[510] != 0x55 || sector[511] != 0xAA {
            w.push(format!(
                "mbr: the EBR at byte offset {off:#x} has no 55 AA signature; chain stopped"
            ));
            return;
        }
        let mut next = None;
        for e in parse_entries(&sector) {
            if e.is_empty() {
                continue;
            }
            if is_extended(e.type_byte) {
                next.get_or_insert(e);
                continue;
            }
            let entry_at = off + e.offset();
            let first = ebr + u64::from(e.start);
            let last_excl = first + u64::from(e.count);
            let inside = first >= base && last_excl <= ext_end;
            if e.slot >= 2 && !inside {
                // Slots 3 and 4 of an EBR are often leftover garbage; only
                // believe them when they fit in the extended partition.
                w.push(format!(
                    "mbr: ignored entry at byte offset {entry_at:#x} (slot {} of an EBR) lying \
                     outside the extended partition",
                    e.slot + 1
                ));
                continue;
            }
            let number = *next_number;
            *next_number += 1;
            let (start, size) = (first * ss, u64::from(e.count) * ss);
            if !inside {
                w.push(format!(
                    "mbr: logical partition {number} (entry at byte offset {entry_at:#x}) lies \
                     outside its extended partition (bytes {:#x}..{:#x})",
                    base * ss,
                    ext_end * ss
                ));
            }
            check_on_disk(w, "mbr", number, entry_at, start, size, disk_len);
            table.partitions.push(Partition {
                number,
                start,
                size,
                kind: kind(&e, true),
            });
        }
        match next {
            Some(n) => ebr = base + u64::from(n.start),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use flr_io::{MemSource, Source};

    fn put(sector: &mut [u8], slot: usize, boot: u8, t: u8, start: u32, count: u32) {
        let at = TABLE_AT + 16 * slot;
        sector[at] = boot;
        sector[at + 4] = t;
        sector[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        sector[at + 12..at + 16].copy_from_slice(&count.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xAA;
    }

    fn disk(sectors: usize) -> Vec<u8> {
        vec![0u8; sectors * 512]
    }

    fn table(d: Vec<u8>) -> PartitionTable {
        let s: Source = Arc::new(MemSource::new(d));
        crate::read_table(&s, None).unwrap().unwrap()
    }

    #[test]
    fn primaries_and_logicals() {
        let mut d = disk(200);
        put(&mut d[..512], 0, 0x80, 0x83, 1, 10);
        put(&mut d[..512], 2, 0, 0x05, 20, 100);
        // EBR 1 at 20: logical at 20+2, next EBR at 20+40
        put(&mut d[20 * 512..21 * 512], 0, 0, 0x07, 2, 10);
        put(&mut d[20 * 512..21 * 512], 1, 0, 0x05, 40, 20);
        // EBR 2 at 60: logical at 61
        put(&mut d[60 * 512..61 * 512], 0, 0, 0x0c, 1, 5);
        let t = table(d);
        assert_eq!(t.scheme, Scheme::Mbr);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let got: Vec<_> = t
            .partitions
            .iter()
            .map(|p| (p.number, p.start / 512, p.size / 512))
            .collect();
        assert_eq!(got, vec![(1, 1, 10), (5, 22, 10), (6, 61, 5)]);
    }

    #[test]
    fn ebr_loop_is_a_warning() {
        let mut d = disk(200);
        put(&mut d[..512], 0, 0, 0x0f, 20, 100);
        put(&mut d[20 * 512..21 * 512], 0, 0, 0x83, 1, 5);
        put(&mut d[20 * 512..21 * 512], 1, 0, 0x05, 40, 20);
        put(&mut d[60 * 512..61 * 512], 0, 0, 0x83, 1, 5);
        put(&mut d[60 * 512..61 * 512], 1, 0, 0x05, 0, 20); // back to EBR 1
        let t = table(d);
        assert_eq!(t.partitions.len(), 2);
        assert!(t.warnings[0].contains("loops back") && t.warnings[0].contains("0x2800"));
    }

    #[test]
    fn past_the_end_is_a_warning() {
        let mut d = disk(100);
        put(&mut d[..512], 1, 0, 0x83, 50, u32::MAX);
        let t = table(d);
        assert_eq!(t.partitions[0].number, 2);
        assert!(t.warnings[0].contains("0x1ce"), "{:?}", t.warnings);
    }

    #[test]
    fn bad_boot_indicator_is_not_an_mbr() {
        let mut d = disk(100);
        put(&mut d[..512], 0, 0x12, 0x83, 1, 10);
        let s: Source = Arc::new(MemSource::new(d));
        assert!(crate::read_table(&s, None).unwrap().is_none());
    }
}
