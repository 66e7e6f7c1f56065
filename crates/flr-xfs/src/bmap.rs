//! A fork's block map: the extent list stored in the inode, or the extent
//! B+tree (BMBT) whose root is in the inode.
//!
//! Source: XFS Algorithms & Data Structures, "Data Extents" and "B+tree
//! Extent List". An extent record is 128 bits, big-endian:
//!
//! ```text
//!  bit 127      126..73         72..21          20..0
//!  unwritten | file offset | start block (AG-relative) | length
//! ```

use flr_fs::FsError;
use flr_io::ReadAt;

use crate::bytes::{be16, be32, be64, crc_ok};
use crate::corrupt;
use crate::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use crate::sb::Superblock;

/// A run of a file: `len` blocks at file block `lblk`, stored at volume
/// block `pblk` (linear, AG number already applied). Unwritten (preallocated)
/// extents read as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) lblk: u64,
    pub(crate) pblk: u64,
    pub(crate) len: u64,
    pub(crate) unwritten: bool,
}

/// The most extents one fork may map (about 100 MiB of memory).
const MAX_EXTENTS: u64 = 4 << 20;
/// B+tree depth limit (real trees are at most 5 or so levels deep).
const MAX_LEVELS: u16 = 10;

const BMAP_MAGIC: u32 = 0x424d_4150; // "BMAP" (v4)
const BMA3_MAGIC: u32 = 0x424d_4133; // "BMA3" (v5)

fn decode(rec: &[u8], sb: &Superblock, at: u64) -> Result<Extent, FsError> {
    let l0 = be64(rec, 0);
    let l1 = be64(rec, 8);
    let unwritten = l0 >> 63 != 0;
    let lblk = (l0 & ((1u64 << 63) - 1)) >> 9;
    let fsb = ((l0 & 0x1ff) << 43) | (l1 >> 21);
    let len = l1 & ((1u64 << 21) - 1);
    let agbno = fsb & ((1u64 << sb.agblklog) - 1);
    let bad = || {
        corrupt(
            at,
            format!("extent record points outside the filesystem (block {fsb:#x}, {len} blocks)"),
        )
    };
    let byte = sb.fsb_to_byte(fsb).ok_or_else(bad)?;
    let pblk = byte / sb.bs;
    if len == 0
        || agbno + len > u64::from(sb.agblocks)
        || pblk + len > sb.dblocks
        || lblk.checked_add(len).is_none()
    {
        return Err(bad());
    }
    Ok(Extent {
        lblk,
        pblk,
        len,
        unwritten,
    })
}

/// Reads the data fork's extents, sorted by file block, adjacent runs
/// merged. Rejects overlapping extents.
pub(crate) fn map(
    src: &dyn ReadAt,
    sb: &Superblock,
    inode: &Inode,
) -> Result<Vec<Extent>, FsError> {
    map_with_nodes(src, sb, inode, &mut Vec::new())
}

/// [`map`], also pushing the byte offset of every extent B+tree block it
/// read onto `nodes` (empty for an extent list in the inode).
pub(crate) fn map_with_nodes(
    src: &dyn ReadAt,
    sb: &Superblock,
    inode: &Inode,
    nodes: &mut Vec<u64>,
) -> Result<Vec<Extent>, FsError> {
    let at = inode.at;
    let limit = inode.nextents.min(MAX_EXTENTS);
    if inode.nextents > MAX_EXTENTS {
        return Err(corrupt(
            at,
            format!(
                "inode {}: {} extents (flr maps at most {MAX_EXTENTS})",
                inode.ino, inode.nextents
            ),
        ));
    }
    let mut out = Vec::new();
    match inode.format {
        FMT_EXTENTS => {
            let n = usize::try_from(limit).unwrap_or(usize::MAX);
            if n.checked_mul(16).is_none_or(|b| b > inode.fork.len()) {
                return Err(corrupt(
                    at,
                    format!("inode {}: {n} extents do not fit in the inode", inode.ino),
                ));
            }
            for rec in inode.fork.chunks_exact(16).take(n) {
                out.push(decode(rec, sb, at)?);
            }
        }
        FMT_BTREE => {
            let f = &inode.fork;
            let level = be16(f, 0);
            let numrecs = usize::from(be16(f, 2));
            let maxrecs = f.len().saturating_sub(4) / 16;
            if level == 0 || level > MAX_LEVELS || numrecs > maxrecs {
                return Err(corrupt(
                    at,
                    format!(
                        "inode {}: bad extent B+tree root (level {level}, {numrecs} records)",
                        inode.ino
                    ),
                ));
            }
            let mut w = Walk {
                src,
                sb,
                ino: inode.ino,
                out: &mut out,
                limit,
                blocks: 0,
                nodes,
            };
            for i in 0..numrecs {
                let ptr = be64(f, 4 + maxrecs * 8 + i * 8);
                w.block(ptr, level - 1)?;
            }
        }
        other => {
            return Err(corrupt(
                at,
                format!(
                    "inode {}: data fork format {other} has no block map",
                    inode.ino
                ),
            ))
        }
    }
    out.sort_by_key(|e| e.lblk);
    let mut merged: Vec<Extent> = Vec::with_capacity(out.len());
    for e in out {
        if let Some(last) = merged.last_mut() {
            if e.lblk < last.lblk + last.len {
                return Err(corrupt(
                    at,
                    format!(
                        "inode {}: overlapping extents at file block {}",
                        inode.ino, e.lblk
                    ),
                ));
            }
            if last.lblk + last.len == e.lblk
                && last.pblk + last.len == e.pblk
                && last.unwritten == e.unwritten
            {
                last.len += e.len;
                continue;
            }
        }
        merged.push(e);
    }
    Ok(merged)
}

struct Walk<'a> {
    src: &'a dyn ReadAt,
    sb: &'a Superblock,
    ino: u64,
    out: &'a mut Vec<Extent>,
    limit: u64,
    blocks: u64,
    nodes: &'a mut Vec<u64>,
}

impl Walk<'_> {
    fn block(&mut self, fsb: u64, level: u16) -> Result<(), FsError> {
        let sb = self.sb;
        let ino = self.ino;
        let at = sb.fsb_to_byte(fsb).ok_or_else(|| {
            corrupt(
                0,
                format!("inode {ino}: extent B+tree pointer {fsb:#x} outside the filesystem"),
            )
        })?;
        // Every block of the tree maps at least one extent.
        self.blocks += 1;
        if self.blocks > self.limit.max(1) {
            return Err(corrupt(
                at,
                format!("inode {ino}: extent B+tree has more blocks than extents (loop?)"),
            ));
        }
        let bs = usize::try_from(sb.bs).unwrap_or(4096);
        let mut b = vec![0u8; bs];
        self.src.read_exact_at(at, &mut b)?;
        self.nodes.push(at);
        let (magic, hdr) = if sb.is_v5() {
            (BMA3_MAGIC, 72)
        } else {
            (BMAP_MAGIC, 24)
        };
        if be32(&b, 0) != magic {
            return Err(corrupt(
                at,
                format!("inode {ino}: extent B+tree block without its magic"),
            ));
        }
        if sb.is_v5() {
            if !crc_ok(&b, 64) {
                return Err(corrupt(
                    at,
                    format!("inode {ino}: extent B+tree block CRC mismatch"),
                ));
            }
            if be64(&b, 56) != ino {
                return Err(corrupt(
                    at,
                    format!(
                        "inode {ino}: extent B+tree block belongs to inode {}",
                        be64(&b, 56)
                    ),
                ));
            }
        }
        let lvl = be16(&b, 4);
        let numrecs = usize::from(be16(&b, 6));
        if lvl != level {
            return Err(corrupt(
                at,
                format!("inode {ino}: extent B+tree block at level {lvl}, expected {level}"),
            ));
        }
        if level == 0 {
            if numrecs > (bs - hdr) / 16 {
                return Err(corrupt(
                    at,
                    format!("inode {ino}: {numrecs} records overflow the block"),
                ));
            }
            if self.out.len() as u64 + numrecs as u64 > self.limit {
                return Err(corrupt(at, format!("inode {ino}: the extent B+tree holds more extents than the inode says ({})", self.limit)));
            }
            for i in 0..numrecs {
                let o = hdr + i * 16;
                self.out.push(decode(&b[o..o + 16], sb, at)?);
            }
            return Ok(());
        }
        let maxrecs = (bs - hdr) / 16;
        if numrecs > maxrecs || numrecs == 0 {
            return Err(corrupt(
                at,
                format!("inode {ino}: {numrecs} keys in an extent B+tree node"),
            ));
        }
        for i in 0..numrecs {
            let ptr = be64(&b, hdr + maxrecs * 8 + i * 8);
            self.block(ptr, level - 1)?;
        }
        Ok(())
    }
}

/// The index of the extent holding file block `lblk`, or (as `Err`) the
/// index of the first extent after it.
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
    fn find_in_runs() {
        let e = |lblk, len| Extent {
            lblk,
            pblk: 100,
            len,
            unwritten: false,
        };
        let v = [e(0, 2), e(4, 1), e(10, 5)];
        assert_eq!(find(&v, 0), Ok(0));
        assert_eq!(find(&v, 1), Ok(0));
        assert_eq!(find(&v, 2), Err(1));
        assert_eq!(find(&v, 4), Ok(1));
        assert_eq!(find(&v, 14), Ok(2));
        assert_eq!(find(&v, 15), Err(3));
    }
}
