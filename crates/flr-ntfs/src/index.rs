//! Directory indexes (`$I30`), parsed here rather than by the ntfs crate,
//! whose index iterator indexes slices with lengths read from the disk and
//! panics on damaged entries. The B-tree is walked in order from
//! `$INDEX_ROOT` through the `INDX` blocks of `$INDEX_ALLOCATION`, each
//! block at most once.

use std::collections::HashSet;

use flr_fs::{FileHandle, FsError};
use flr_io::ReaderCursor;
use ntfs::{NtfsAttributeType, NtfsFile};

use crate::data::{Data, NtfsHandle};
use crate::{corrupt, utf16, NtfsFs};

const ENTRY_HAS_SUBNODE: u16 = 0x1;
const ENTRY_LAST: u16 = 0x2;
const NAMESPACE_DOS: u8 = 2;
/// Cap on index blocks visited in one directory (16 GiB of 4 KiB blocks).
const MAX_BLOCKS: usize = 1 << 22;

fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexName {
    pub(crate) name: String,
    pub(crate) rec: u64,
    pub(crate) seq: u16,
}

struct Walk<'a> {
    alloc: Option<NtfsHandle>,
    block_size: usize,
    vcn_shift: u32,
    visited: HashSet<u64>,
    out: &'a mut Vec<IndexName>,
}

impl Walk<'_> {
    /// Walks the entries of one node (`node` starts at its node header).
    fn node(&mut self, node: &[u8], at: u64, depth: u32) -> Result<(), FsError> {
        if depth > 64 {
            return Err(corrupt(at, "directory index is too deep"));
        }
        let first = le32(node, 0) as usize;
        let used = le32(node, 4) as usize;
        if first < 16 || used > node.len() || first > used {
            return Err(corrupt(at, "bad index node header"));
        }
        let mut pos = first;
        loop {
            if pos + 16 > used {
                return Err(corrupt(
                    at + pos as u64,
                    "index entries run past their node",
                ));
            }
            let e = &node[pos..used];
            let len = usize::from(le16(e, 8));
            let key_len = usize::from(le16(e, 10));
            let flags = le16(e, 12);
            if len < 16 || len % 8 != 0 || len > e.len() || (key_len > 0 && 16 + key_len > len) {
                return Err(corrupt(at + pos as u64, "bad index entry length"));
            }
            if flags & ENTRY_HAS_SUBNODE != 0 {
                if len < 24 {
                    return Err(corrupt(
                        at + pos as u64,
                        "index entry too short for a subnode",
                    ));
                }
                self.child(le64(e, len - 8), depth)?;
            }
            if flags & ENTRY_LAST != 0 {
                return Ok(());
            }
            let key = &e[16..16 + key_len];
            let name_len = usize::from(key.get(0x40).copied().unwrap_or(0));
            let namespace = key.get(0x41).copied().unwrap_or(0xff);
            let Some(name) = key.get(0x42..0x42 + name_len * 2) else {
                return Err(corrupt(
                    at + pos as u64,
                    "index entry name runs past its key",
                ));
            };
            if namespace > 3 || name_len == 0 {
                return Err(corrupt(at + pos as u64, "bad file name in index entry"));
            }
            if namespace != NAMESPACE_DOS {
                let r = le64(e, 0);
                self.out.push(IndexName {
                    name: utf16(name),
                    rec: r & 0x0000_ffff_ffff_ffff,
                    seq: (r >> 48) as u16,
                });
            }
            pos += len;
        }
    }

    fn child(&mut self, vcn: u64, depth: u32) -> Result<(), FsError> {
        let Some(alloc) = self.alloc.as_mut() else {
            return Err(corrupt(
                0,
                "index entry points to a subnode but there is no index allocation",
            ));
        };
        if self.visited.len() >= MAX_BLOCKS {
            return Err(corrupt(0, "directory index has too many blocks"));
        }
        if !self.visited.insert(vcn) {
            return Err(corrupt(
                0,
                format!("directory index visits block {vcn} twice"),
            ));
        }
        let off = vcn
            .checked_shl(self.vcn_shift)
            .filter(|o| o >> self.vcn_shift == vcn)
            .ok_or_else(|| corrupt(0, "index block number out of range"))?;
        let mut blk = vec![0u8; self.block_size];
        let n = alloc.read_at(off, &mut blk)?;
        if n != blk.len() {
            return Err(corrupt(
                0,
                format!("index block {vcn} lies past the index allocation"),
            ));
        }
        if &blk[0..4] != b"INDX" {
            return Err(corrupt(
                0,
                format!("index block {vcn} has no INDX signature"),
            ));
        }
        fixup(&mut blk)?;
        if le64(&blk, 0x10) != vcn {
            return Err(corrupt(
                0,
                format!("index block {vcn} claims to be block {}", le64(&blk, 0x10)),
            ));
        }
        self.node(&blk[0x18..], off + 0x18, depth + 1)
    }
}

/// Undoes the update sequence of an `INDX` block in memory.
fn fixup(blk: &mut [u8]) -> Result<(), FsError> {
    let usa_off = usize::from(le16(blk, 4));
    let usa_count = usize::from(le16(blk, 6));
    if usa_count == 0 || usa_off + usa_count * 2 > blk.len() || (usa_count - 1) * 512 > blk.len() {
        return Err(corrupt(
            0,
            "index block has an invalid update sequence array",
        ));
    }
    let usn = [blk[usa_off], blk[usa_off + 1]];
    for i in 1..usa_count {
        let end = i * 512 - 2;
        if blk[end..end + 2] != usn {
            return Err(corrupt(
                0,
                "index block update sequence mismatch (torn write)",
            ));
        }
        blk[end] = blk[usa_off + i * 2];
        blk[end + 1] = blk[usa_off + i * 2 + 1];
    }
    Ok(())
}

impl NtfsFs {
    /// The names in directory `file`, in index order, DOS names skipped.
    pub(crate) fn index_names(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
    ) -> Result<Vec<IndexName>, FsError> {
        // $INDEX_ROOT is always resident, in the base record or an extension.
        let mut root = None;
        self.for_each_extent(
            fs,
            file,
            NtfsAttributeType::IndexRoot,
            "$I30",
            &mut |fs, _, a| {
                if !a.is_resident() {
                    return Err(corrupt(0, "$INDEX_ROOT is not resident"));
                }
                if let Data::Resident(v) = self.resident(fs, a)? {
                    root = Some(v);
                }
                Ok(false)
            },
        )?;
        let root = root.ok_or_else(|| {
            corrupt(
                0,
                format!(
                    "directory record {} has no $I30 index",
                    file.file_record_number()
                ),
            )
        })?;
        if root.len() < 0x20 {
            return Err(corrupt(0, "$INDEX_ROOT is truncated"));
        }
        let block_size = le32(&root, 8) as usize;
        let cluster = self.ntfs.cluster_size() as usize;
        let has_children = root[0x1c] & 1 != 0;
        let alloc = if has_children {
            if !(512..=1 << 16).contains(&block_size) || !block_size.is_power_of_two() {
                return Err(corrupt(
                    0,
                    format!("index block size {block_size} is invalid"),
                ));
            }
            let data = self.stream_of(fs, file, NtfsAttributeType::IndexAllocation, "$I30")?;
            Some(NtfsHandle::new(self.src.clone(), data))
        } else {
            None
        };
        let vcn_shift = if block_size >= cluster {
            cluster.trailing_zeros()
        } else {
            9
        };
        let mut out = Vec::new();
        let mut w = Walk {
            alloc,
            block_size,
            vcn_shift,
            visited: HashSet::new(),
            out: &mut out,
        };
        w.node(&root[0x10..], 0, 0)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rec: u64, name: &str, ns: u8, flags: u16, sub: Option<u64>) -> Vec<u8> {
        let mut key = vec![0u8; 0x42];
        let units: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        key[0x40] = (units.len() / 2) as u8;
        key[0x41] = ns;
        key.extend(units);
        let mut e = Vec::new();
        e.extend_from_slice(&(rec | 1 << 48).to_le_bytes());
        let body = 16
            + if flags & ENTRY_LAST != 0 {
                0
            } else {
                key.len()
            };
        let len = (body + if sub.is_some() { 8 } else { 0 }).div_ceil(8) * 8;
        e.extend_from_slice(&(len as u16).to_le_bytes());
        e.extend_from_slice(
            &(if flags & ENTRY_LAST != 0 {
                0u16
            } else {
                key.len() as u16
            })
            .to_le_bytes(),
        );
        e.extend_from_slice(
            &(flags | if sub.is_some() { ENTRY_HAS_SUBNODE } else { 0 }).to_le_bytes(),
        );
        e.extend_from_slice(&[0, 0]);
        if flags & ENTRY_LAST == 0 {
            e.extend(key);
        }
        e.resize(len, 0);
        if let Some(v) = sub {
            e[len - 8..].copy_from_slice(&v.to_le_bytes());
        }
        e
    }

    fn node(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut n = vec![0u8; 16];
        n[0..4].copy_from_slice(&16u32.to_le_bytes());
        n[4..8].copy_from_slice(&((16 + body.len()) as u32).to_le_bytes());
        n[8..12].copy_from_slice(&((16 + body.len()) as u32).to_le_bytes());
        n.extend(body);
        n
    }

    #[test]
    fn root_node_entries_skip_dos_names() {
        let n = node(&[
            entry(64, "LONGFI~1.TXT", 2, 0, None),
            entry(64, "LongFileName.txt", 1, 0, None),
            entry(0, "", 0, ENTRY_LAST, None),
        ]);
        let mut out = Vec::new();
        let mut w = Walk {
            alloc: None,
            block_size: 4096,
            vcn_shift: 12,
            visited: HashSet::new(),
            out: &mut out,
        };
        w.node(&n, 0, 0).unwrap();
        assert_eq!(
            out,
            vec![IndexName {
                name: "LongFileName.txt".into(),
                rec: 64,
                seq: 1
            }]
        );
    }

    #[test]
    fn damaged_nodes_are_errors() {
        let good = node(&[
            entry(64, "a", 1, 0, None),
            entry(0, "", 0, ENTRY_LAST, None),
        ]);
        for (at, val) in [
            (16 + 8, 0u8),
            (16 + 8, 0xff),
            (16 + 10, 0xff),
            (16 + 16 + 0x40, 200),
            (16 + 16 + 0x41, 9),
            (4, 0xff),
            (0, 0),
        ] {
            let mut n = good.clone();
            n[at] = val;
            let mut out = Vec::new();
            let mut w = Walk {
                alloc: None,
                block_size: 4096,
                vcn_shift: 12,
                visited: HashSet::new(),
                out: &mut out,
            };
            assert!(w.node(&n, 0, 0).is_err(), "byte {at} = {val}");
        }
        // A subnode without an index allocation.
        let n = node(&[entry(0, "", 0, ENTRY_LAST, Some(0))]);
        let mut out = Vec::new();
        let mut w = Walk {
            alloc: None,
            block_size: 4096,
            vcn_shift: 12,
            visited: HashSet::new(),
            out: &mut out,
        };
        assert!(w.node(&n, 0, 0).is_err());
    }
}
