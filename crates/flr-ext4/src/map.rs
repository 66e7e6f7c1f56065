//! File block mapping: extent trees (ext4) and indirect block maps
//! (ext2/3), flattened into a sorted list of mapped runs. Blocks not
//! covered by a run are holes, as are unwritten (preallocated) extents.

use flr_fs::FsError;

use crate::bytes::{le16, le32};
use crate::inode::{Inode, FL_EXTENTS};
use crate::{corrupt, Core};

/// A run of mapped blocks: logical `lblk..lblk+len` at physical `pblk..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) lblk: u64,
    pub(crate) len: u64,
    pub(crate) pblk: u64,
}

const EXTENT_MAGIC: u16 = 0xF30A;
const MAX_DEPTH: u16 = 5;
/// Initialized extents are at most this long; longer values mean unwritten.
const INIT_MAX_LEN: u16 = 32768;
/// Cap on extent-tree nodes (and indirect blocks) visited for one file.
const MAX_NODES: u64 = 1 << 22;

struct Builder {
    out: Vec<Extent>,
    /// Blocks mapped so far, and the most a file can map: no more than the
    /// volume holds, so that shared (hostile) indirect or extent blocks
    /// cannot make the map grow without bound.
    mapped: u64,
    max_mapped: u64,
    /// End (exclusive) of the last logical range seen, mapped or not.
    covered: u64,
    nblocks: u64,
    nodes: u64,
    /// Physical blocks of the extent-tree nodes or indirect blocks read.
    meta: Vec<u64>,
}

impl Builder {
    fn push(&mut self, lblk: u64, len: u64, pblk: u64) -> Result<(), FsError> {
        self.mapped += len;
        if self.mapped > self.max_mapped {
            return Err(corrupt(0, "a file maps more blocks than the volume holds"));
        }
        if let Some(last) = self.out.last_mut() {
            if last.lblk + last.len == lblk && last.pblk + last.len == pblk {
                last.len += len;
                return Ok(());
            }
        }
        self.out.push(Extent { lblk, len, pblk });
        Ok(())
    }
}

impl Core {
    /// The mapped runs of `inode`'s first `ceil(size / bs)` blocks.
    pub(crate) fn map_inode(&self, inode: &Inode) -> Result<Vec<Extent>, FsError> {
        Ok(self.map_inode_with_nodes(inode)?.0)
    }

    /// [`Core::map_inode`], and the physical blocks of the extent-tree
    /// nodes or indirect blocks the map was read from.
    pub(crate) fn map_inode_with_nodes(
        &self,
        inode: &Inode,
    ) -> Result<(Vec<Extent>, Vec<u64>), FsError> {
        let nblocks = inode.size.div_ceil(self.sb.bs);
        let max_mapped = self
            .sb
            .blocks_count
            .min(self.vol.src.len() / self.sb.bs + 1);
        let mut b = Builder {
            out: Vec::new(),
            mapped: 0,
            max_mapped,
            covered: 0,
            nblocks,
            nodes: 0,
            meta: Vec::new(),
        };
        if nblocks == 0 {
            return Ok((b.out, b.meta));
        }
        if inode.has_flag(FL_EXTENTS) {
            let at = self.inode_offset(inode.ino).unwrap_or(0) + 0x28;
            self.extent_node(inode, &inode.block, at, None, &mut b)?;
        } else {
            self.block_map(inode, &mut b)?;
        }
        Ok((b.out, b.meta))
    }

    fn check_phys(&self, inode: &Inode, pblk: u64, len: u64, at: u64) -> Result<(), FsError> {
        let ok = pblk != 0
            && pblk >= u64::from(self.sb.first_data_block)
            && pblk
                .checked_add(len)
                .is_some_and(|e| e <= self.sb.blocks_count);
        if ok {
            Ok(())
        } else {
            Err(corrupt(
                at,
                format!(
                    "inode {}: block {pblk} (+{len}) lies outside the filesystem",
                    inode.ino
                ),
            ))
        }
    }

    fn extent_node(
        &self,
        inode: &Inode,
        node: &[u8],
        at: u64,
        want_depth: Option<u16>,
        b: &mut Builder,
    ) -> Result<(), FsError> {
        let bad = |what: &str| corrupt(at, format!("inode {}: extent tree: {what}", inode.ino));
        if le16(node, 0) != EXTENT_MAGIC {
            return Err(bad("bad node magic"));
        }
        let entries = usize::from(le16(node, 2));
        let max = usize::from(le16(node, 4));
        let depth = le16(node, 6);
        if depth > MAX_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(bad("inconsistent depth"));
        }
        if entries > max || 12 + entries * 12 > node.len() {
            return Err(bad("entry count exceeds the node"));
        }
        for e in 0..entries {
            let o = 12 + e * 12;
            let lblk = u64::from(le32(node, o));
            if depth == 0 {
                let raw_len = le16(node, o + 4);
                let pblk = u64::from(le16(node, o + 6)) << 32 | u64::from(le32(node, o + 8));
                let (unwritten, len) = if raw_len > INIT_MAX_LEN {
                    (true, u64::from(raw_len - INIT_MAX_LEN))
                } else {
                    (false, u64::from(raw_len))
                };
                if len == 0 {
                    return Err(bad("zero-length extent"));
                }
                if lblk < b.covered {
                    return Err(bad("extents overlap or are out of order"));
                }
                b.covered = lblk + len;
                if lblk >= b.nblocks {
                    continue; // beyond the end of file (preallocated)
                }
                self.check_phys(inode, pblk, len, at)?;
                if !unwritten {
                    b.push(lblk, len.min(b.nblocks - lblk), pblk)?;
                }
            } else {
                if lblk < b.covered {
                    return Err(bad("index entries overlap or are out of order"));
                }
                if lblk >= b.nblocks {
                    break;
                }
                let child = u64::from(le16(node, o + 8)) << 32 | u64::from(le32(node, o + 4));
                self.check_phys(inode, child, 1, at)?;
                b.nodes += 1;
                if b.nodes > MAX_NODES {
                    return Err(bad("too many nodes"));
                }
                let mut buf = vec![0u8; self.bs_usize()];
                let child_at = child * self.sb.bs;
                b.meta.push(child);
                self.vol.read(child_at, &mut buf)?;
                self.extent_node(inode, &buf, child_at, Some(depth - 1), b)?;
            }
        }
        Ok(())
    }

    fn block_map(&self, inode: &Inode, b: &mut Builder) -> Result<(), FsError> {
        let at = self.inode_offset(inode.ino).unwrap_or(0) + 0x28;
        let ptr = |i: usize| u64::from(le32(&inode.block, i * 4));
        for i in 0..12u64 {
            if i >= b.nblocks {
                return Ok(());
            }
            let p = ptr(i as usize);
            if p != 0 {
                self.check_phys(inode, p, 1, at)?;
                b.push(i, 1, p)?;
            }
        }
        let per = self.sb.bs / 4;
        let mut start = 12u64;
        let mut span = per;
        for (level, slot) in [(1u32, 12usize), (2, 13), (3, 14)] {
            if start >= b.nblocks {
                return Ok(());
            }
            let p = ptr(slot);
            if p != 0 {
                self.check_phys(inode, p, 1, at)?;
                self.indirect(inode, p, level, start, b)?;
            }
            start = start.saturating_add(span);
            span = span.saturating_mul(per);
        }
        Ok(())
    }

    /// Walks an indirect block of `level` (1 = pointers to data) whose
    /// first pointer maps logical block `start`.
    fn indirect(
        &self,
        inode: &Inode,
        blk: u64,
        level: u32,
        start: u64,
        b: &mut Builder,
    ) -> Result<(), FsError> {
        b.nodes += 1;
        if b.nodes > MAX_NODES {
            return Err(corrupt(
                blk * self.sb.bs,
                format!("inode {}: too many indirect blocks", inode.ino),
            ));
        }
        let per = self.sb.bs / 4;
        let child_span = per.saturating_pow(level - 1);
        let mut buf = vec![0u8; self.bs_usize()];
        let at = blk * self.sb.bs;
        b.meta.push(blk);
        self.vol.read(at, &mut buf)?;
        for j in 0..per {
            let lblk = start.saturating_add(j.saturating_mul(child_span));
            if lblk >= b.nblocks {
                break;
            }
            let p = u64::from(le32(&buf, (j * 4) as usize));
            if p == 0 {
                continue;
            }
            self.check_phys(inode, p, 1, at + j * 4)?;
            if level == 1 {
                b.push(lblk, 1, p)?;
            } else {
                self.indirect(inode, p, level - 1, lblk, b)?;
            }
        }
        Ok(())
    }
}

/// Index of the run containing logical block `lblk`, or `Err(i)` where `i`
/// is the first run after it.
pub(crate) fn find(extents: &[Extent], lblk: u64) -> Result<usize, usize> {
    let i = extents.partition_point(|e| e.lblk + e.len <= lblk);
    match extents.get(i) {
        Some(e) if e.lblk <= lblk => Ok(i),
        _ => Err(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_more_blocks_than_the_volume_is_an_error() {
        let mut b = Builder {
            out: Vec::new(),
            mapped: 0,
            max_mapped: 10,
            covered: 0,
            nblocks: 100,
            nodes: 0,
            meta: Vec::new(),
        };
        b.push(0, 4, 50).unwrap();
        b.push(4, 4, 54).unwrap();
        assert_eq!(
            b.out,
            vec![Extent {
                lblk: 0,
                len: 8,
                pblk: 50
            }]
        );
        // Shared blocks (the same physical block again and again).
        b.push(8, 1, 50).unwrap();
        b.push(9, 1, 50).unwrap();
        assert!(b.push(10, 1, 50).is_err());
    }

    #[test]
    fn find_runs_and_holes() {
        let ex = [
            Extent {
                lblk: 2,
                len: 3,
                pblk: 100,
            },
            Extent {
                lblk: 10,
                len: 1,
                pblk: 7,
            },
        ];
        assert_eq!(find(&ex, 0), Err(0));
        assert_eq!(find(&ex, 2), Ok(0));
        assert_eq!(find(&ex, 4), Ok(0));
        assert_eq!(find(&ex, 5), Err(1));
        assert_eq!(find(&ex, 10), Ok(1));
        assert_eq!(find(&ex, 11), Err(2));
    }
}
