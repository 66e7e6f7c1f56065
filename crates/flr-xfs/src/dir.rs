//! XFS version 2 directories, in every format.
//!
//! Source: XFS Algorithms & Data Structures, "Directories". A short-form
//! directory lives in the inode. Every other format (block, leaf, node,
//! B+tree) keeps its entries in *data blocks* below the 32 GiB directory
//! offset; the leaf, node and free-index blocks above it are hash indexes
//! for lookups. flr lists a directory by reading its data blocks (found
//! through the inode's block map, so an extent list and an extent B+tree
//! are the same to it) and looks names up in that listing, so one code path
//! reads all four extent-based formats.
//!
//! ```text
//! data block:  header | entry | unused | entry | ...           (| leaf | tail  in a block-format dir)
//! entry:       inumber u64 | namelen u8 | name | [ftype u8] | pad to 8 | tag u16
//! unused:      0xffff u16 | length u16 | ...                 | tag u16
//! ```

use std::collections::HashMap;

use flr_fs::FsError;

use crate::bytes::{be16, be32, be64, crc_ok};
use crate::corrupt;
use crate::sb::Superblock;

const XD2B: u32 = 0x5844_3242; // block directory, v4
const XDB3: u32 = 0x5844_4233; // block directory, v5
const XD2D: u32 = 0x5844_3244; // data block, v4
const XDD3: u32 = 0x5844_4433; // data block, v5

/// Where the hash-index part of a directory starts (bytes of directory offset).
pub(crate) const LEAF_OFFSET: u64 = 32 << 30;

/// The entries of one directory.
#[derive(Debug, Default)]
pub(crate) struct DirList {
    /// (name, inode number, file type from the entry (0 = unknown)).
    pub(crate) entries: Vec<(Vec<u8>, u64, u8)>,
    pub(crate) parent: Option<u64>,
    index: HashMap<Vec<u8>, usize>,
}

impl DirList {
    fn push(&mut self, name: &[u8], ino: u64, ftype: u8) {
        match name {
            b"." => {}
            b".." => self.parent = Some(ino),
            _ => self.entries.push((name.to_vec(), ino, ftype)),
        }
    }

    pub(crate) fn finish(&mut self) {
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (n, _, _))| (n.clone(), i))
            .collect();
    }

    pub(crate) fn lookup(&self, name: &[u8]) -> Option<u64> {
        self.index.get(name).map(|&i| self.entries[i].1)
    }

    /// Parses a short-form directory (the inode's data fork).
    pub(crate) fn short_form(
        fork: &[u8],
        size: u64,
        sb: &Superblock,
        ino: u64,
        at: u64,
    ) -> Result<DirList, FsError> {
        let bad = |what: &str| corrupt(at, format!("short-form directory inode {ino}: {what}"));
        let len = usize::try_from(size)
            .ok()
            .filter(|&s| s <= fork.len())
            .ok_or_else(|| bad("size larger than the inode"))?;
        let b = &fork[..len];
        if b.len() < 6 {
            return Err(bad("too short"));
        }
        let count = usize::from(b[0]);
        let wide = b[1] != 0;
        let isz = if wide { 8 } else { 4 };
        let ino_at = |o: usize| {
            if wide {
                be64(b, o)
            } else {
                u64::from(be32(b, o))
            }
        };
        let mut list = DirList {
            parent: Some(ino_at(2)),
            ..DirList::default()
        };
        let ft = usize::from(sb.has_ftype());
        let mut o = 2 + isz;
        for _ in 0..count {
            let namelen = usize::from(*b.get(o).ok_or_else(|| bad("entry past the end"))?);
            let name_at = o + 3;
            let end = name_at + namelen + ft + isz;
            if namelen == 0 || end > b.len() {
                return Err(bad("entry past the end"));
            }
            let ftype = if ft == 1 { b[name_at + namelen] } else { 0 };
            list.push(
                &b[name_at..name_at + namelen],
                ino_at(name_at + namelen + ft),
                ftype,
            );
            o = end;
        }
        list.finish();
        Ok(list)
    }

    /// Adds the entries of one directory data block (`block_dir`: the only
    /// block of a block-format directory, which ends with its hash index).
    pub(crate) fn add_block(
        &mut self,
        b: &[u8],
        sb: &Superblock,
        ino: u64,
        at: u64,
        first: bool,
    ) -> Result<(), FsError> {
        let bad = |what: String| corrupt(at, format!("directory inode {ino}: {what}"));
        let magic = be32(b, 0);
        let v5 = sb.is_v5();
        let (block_magic, data_magic, hdr) = if v5 {
            (XDB3, XDD3, 64)
        } else {
            (XD2B, XD2D, 16)
        };
        let mut end = b.len();
        if magic == block_magic && first {
            let count = usize::try_from(be32(b, b.len() - 8)).unwrap_or(usize::MAX);
            end = count
                .checked_mul(8)
                .and_then(|l| b.len().checked_sub(8 + l))
                .filter(|&e| e >= hdr)
                .ok_or_else(|| {
                    bad(format!(
                        "block directory index of {count} entries overflows the block"
                    ))
                })?;
        } else if magic != data_magic {
            return Err(bad(format!("data block without its magic ({magic:#x})")));
        }
        if v5 {
            if !crc_ok(b, 4) {
                return Err(bad("data block CRC mismatch".into()));
            }
            if be64(b, 40) != ino {
                return Err(bad(format!("data block belongs to inode {}", be64(b, 40))));
            }
        }
        let ft = usize::from(sb.has_ftype());
        let mut o = hdr;
        while o < end {
            if be16(b, o) == 0xffff {
                let len = usize::from(be16(b, o + 2));
                if len < 8 || len % 8 != 0 || o + len > end {
                    return Err(bad(format!(
                        "bad free-space length {len} at block offset {o}"
                    )));
                }
                o += len;
                continue;
            }
            let namelen = usize::from(*b.get(o + 8).unwrap_or(&0));
            let len = (8 + 1 + namelen + ft + 2 + 7) & !7;
            if namelen == 0 || o + len > end {
                return Err(bad(format!("bad entry at block offset {o}")));
            }
            let name = &b[o + 9..o + 9 + namelen];
            let ftype = if ft == 1 { b[o + 9 + namelen] } else { 0 };
            self.push(name, be64(b, o), ftype);
            o += len;
        }
        Ok(())
    }
}
