//! jbd2 journal replay, done virtually: the committed transactions still in
//! the log are scanned and each block they rewrote is mapped to its newest
//! copy in the journal, so reads see the filesystem as the kernel would
//! after recovery. Nothing is written.

use std::collections::{BTreeMap, HashMap};

use flr_fs::{FsError, Journal, NotReplayed};

use crate::bytes::{be16, be32};
use crate::map::{find, Extent};
use crate::sb::COMPAT_HAS_JOURNAL;
use crate::vol::{JTarget, JBD2_MAGIC};
use crate::{corrupt, Core};

const BT_DESCRIPTOR: u32 = 1;
const BT_COMMIT: u32 = 2;
const BT_SB_V1: u32 = 3;
const BT_SB_V2: u32 = 4;
const BT_REVOKE: u32 = 5;

const J_INCOMPAT_REVOKE: u32 = 0x1;
const J_INCOMPAT_64BIT: u32 = 0x2;
const J_INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const J_INCOMPAT_CSUM_V2: u32 = 0x8;
const J_INCOMPAT_CSUM_V3: u32 = 0x10;
const J_INCOMPAT_FAST_COMMIT: u32 = 0x20;
const J_INCOMPAT_KNOWN: u32 = J_INCOMPAT_REVOKE
    | J_INCOMPAT_64BIT
    | J_INCOMPAT_ASYNC_COMMIT
    | J_INCOMPAT_CSUM_V2
    | J_INCOMPAT_CSUM_V3
    | J_INCOMPAT_FAST_COMMIT;

const TAG_ESCAPED: u32 = 0x1;
const TAG_SAME_UUID: u32 = 0x2;
const TAG_LAST: u32 = 0x8;

/// `a` is a later transaction than `b` (sequence numbers wrap).
fn tid_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

struct Txn {
    seq: u32,
    /// (filesystem block, journal block, escaped)
    tags: Vec<(u64, u64, bool)>,
}

struct Log<'a> {
    core: &'a Core,
    extents: Vec<Extent>,
    first: u64,
    maxlen: u64,
    incompat: u32,
}

impl Log<'_> {
    fn phys(&self, jblk: u64) -> Result<u64, FsError> {
        match find(&self.extents, jblk) {
            Ok(i) => {
                let e = self.extents[i];
                Ok(e.pblk + (jblk - e.lblk))
            }
            Err(_) => Err(corrupt(0, format!("journal block {jblk} is not mapped"))),
        }
    }

    fn read(&self, jblk: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let p = self.phys(jblk)?;
        self.core.vol.read(p * self.core.sb.bs, buf)
    }

    fn next(&self, jblk: u64) -> u64 {
        if jblk + 1 >= self.maxlen {
            self.first
        } else {
            jblk + 1
        }
    }

    fn tag_bytes(&self) -> usize {
        if self.incompat & J_INCOMPAT_CSUM_V3 != 0 {
            return 16;
        }
        let mut sz = 12;
        if self.incompat & J_INCOMPAT_CSUM_V2 != 0 {
            sz += 2;
        }
        if self.incompat & J_INCOMPAT_64BIT != 0 {
            sz
        } else {
            sz - 4
        }
    }

    fn tail_bytes(&self) -> usize {
        if self.incompat & (J_INCOMPAT_CSUM_V2 | J_INCOMPAT_CSUM_V3) != 0 {
            4
        } else {
            0
        }
    }
}

impl Core {
    /// Builds the block map of the journal's committed transactions and
    /// says what was done. A journal that cannot be replayed (unknown
    /// features, a damaged journal superblock, a read error) leaves the
    /// filesystem read as it is on disk, with the reason.
    pub(crate) fn journal(&self) -> (BTreeMap<u64, JTarget>, Journal) {
        let sb = &self.sb;
        if sb.compat & COMPAT_HAS_JOURNAL == 0 {
            return (BTreeMap::new(), Journal::None);
        }
        if sb.journal_inum == 0 {
            return (
                BTreeMap::new(),
                Journal::NotReplayed {
                    reason: NotReplayed::ExternalLog,
                },
            );
        }
        match self.load_journal() {
            Ok(None) => (BTreeMap::new(), Journal::Clean),
            Ok(Some((map, transactions))) => (
                map,
                Journal::Replayed {
                    transactions,
                    unfinished: 0,
                },
            ),
            Err(e) => {
                let reason = match e {
                    FsError::Io(e) => NotReplayed::ReadFailed {
                        what: e.to_string(),
                    },
                    FsError::Unsupported { reason, .. } => {
                        NotReplayed::Unsupported { what: reason }
                    }
                    FsError::Corrupt { offset, what, .. } => NotReplayed::Damaged { offset, what },
                    other => NotReplayed::Damaged {
                        offset: None,
                        what: other.to_string(),
                    },
                };
                (BTreeMap::new(), Journal::NotReplayed { reason })
            }
        }
    }

    /// The block map of the journal's committed transactions and their
    /// number; `None` when the journal is clean.
    #[allow(clippy::type_complexity)]
    fn load_journal(&self) -> Result<Option<(BTreeMap<u64, JTarget>, u64)>, FsError> {
        let sb = &self.sb;
        let mut map = BTreeMap::new();
        let jinode = self.read_inode(sb.journal_inum)?;
        let extents = self.map_inode(&jinode)?;
        let bs = self.bs_usize();
        let mut log = Log {
            core: self,
            extents,
            first: 0,
            maxlen: 0,
            incompat: 0,
        };
        let mut jsb = vec![0u8; bs];
        log.read(0, &mut jsb)?;
        let jsb_at = log.phys(0)? * sb.bs;
        let btype = be32(&jsb, 4);
        if be32(&jsb, 0) != JBD2_MAGIC || !(btype == BT_SB_V1 || btype == BT_SB_V2) {
            return Err(corrupt(jsb_at, "bad journal superblock"));
        }
        if u64::from(be32(&jsb, 0xc)) != sb.bs {
            return Err(corrupt(
                jsb_at,
                "journal block size differs from the filesystem's",
            ));
        }
        let maxlen = u64::from(be32(&jsb, 0x10));
        let first = u64::from(be32(&jsb, 0x14));
        let start = u64::from(be32(&jsb, 0x1c));
        if start == 0 {
            return Ok(None); // clean
        }
        let jblocks = jinode.size / sb.bs;
        if maxlen > jblocks || first == 0 || first >= maxlen || start < first || start >= maxlen {
            return Err(corrupt(jsb_at, "journal superblock geometry is invalid"));
        }
        let incompat = if btype == BT_SB_V2 {
            be32(&jsb, 0x28)
        } else {
            0
        };
        if incompat & !J_INCOMPAT_KNOWN != 0 {
            return Err(FsError::Unsupported {
                path: "/".into(),
                reason: format!(
                    "unknown journal features {:#x}; cannot replay the journal",
                    incompat & !J_INCOMPAT_KNOWN
                ),
            });
        }
        log.first = first;
        // With fast commits, the last blocks of the journal hold the fast
        // commit area; the ordinary log wraps before it.
        log.maxlen = if incompat & J_INCOMPAT_FAST_COMMIT != 0 {
            let fc = match u64::from(be32(&jsb, 0x54)) {
                0 => 256,
                n => n,
            };
            maxlen.saturating_sub(fc).max(first + 1)
        } else {
            maxlen
        };
        if start >= log.maxlen {
            return Err(corrupt(
                jsb_at,
                "journal start lies in the fast commit area",
            ));
        }
        log.incompat = incompat;

        // Pass 1: collect the committed transactions and their revocations.
        let mut txns: Vec<Txn> = Vec::new();
        let mut revoked: HashMap<u64, u32> = HashMap::new();
        let mut seq = be32(&jsb, 0x18);
        let mut jblk = start;
        let mut steps = 0u64;
        let mut cur = Txn {
            seq,
            tags: Vec::new(),
        };
        let mut cur_revokes: Vec<u64> = Vec::new();
        let mut blk = vec![0u8; bs];
        let is64 = incompat & J_INCOMPAT_64BIT != 0;
        'scan: while steps < maxlen {
            if log.read(jblk, &mut blk).is_err() {
                break;
            }
            if be32(&blk, 0) != JBD2_MAGIC || be32(&blk, 8) != seq {
                break;
            }
            match be32(&blk, 4) {
                BT_DESCRIPTOR => {
                    let tb = log.tag_bytes();
                    let end = bs - log.tail_bytes();
                    let mut o = 12;
                    while o + tb <= end {
                        let lo = u64::from(be32(&blk, o));
                        let (flags, hi) = if incompat & J_INCOMPAT_CSUM_V3 != 0 {
                            (be32(&blk, o + 4), u64::from(be32(&blk, o + 8)))
                        } else {
                            (
                                u32::from(be16(&blk, o + 6)),
                                if is64 {
                                    u64::from(be32(&blk, o + 8))
                                } else {
                                    0
                                },
                            )
                        };
                        let fsblk = if is64 { lo | hi << 32 } else { lo };
                        o += tb;
                        if flags & TAG_SAME_UUID == 0 {
                            o += 16;
                        }
                        jblk = log.next(jblk);
                        steps += 1;
                        if fsblk >= self.sb.blocks_count {
                            break 'scan; // a corrupt tag ends the usable log
                        }
                        cur.tags.push((fsblk, jblk, flags & TAG_ESCAPED != 0));
                        if flags & TAG_LAST != 0 {
                            break;
                        }
                    }
                }
                BT_COMMIT => {
                    for r in cur_revokes.drain(..) {
                        revoked.insert(r, seq);
                    }
                    let done = std::mem::replace(
                        &mut cur,
                        Txn {
                            seq: seq.wrapping_add(1),
                            tags: Vec::new(),
                        },
                    );
                    txns.push(done);
                    seq = seq.wrapping_add(1);
                }
                BT_REVOKE => {
                    let count = usize::try_from(be32(&blk, 12))
                        .unwrap_or(usize::MAX)
                        .min(bs - log.tail_bytes());
                    let rec = if is64 { 8 } else { 4 };
                    let mut o = 16;
                    while o + rec <= count {
                        let r = if is64 {
                            u64::from(be32(&blk, o)) << 32 | u64::from(be32(&blk, o + 4))
                        } else {
                            u64::from(be32(&blk, o))
                        };
                        cur_revokes.push(r);
                        o += rec;
                    }
                }
                _ => break,
            }
            jblk = log.next(jblk);
            steps += 1;
        }

        // Pass 2: replay in order, skipping revoked writes.
        for t in &txns {
            for &(fsblk, jb, escaped) in &t.tags {
                if let Some(&rseq) = revoked.get(&fsblk) {
                    if !tid_gt(t.seq, rseq) {
                        continue;
                    }
                }
                map.insert(
                    fsblk,
                    JTarget {
                        pblk: log.phys(jb)?,
                        escaped,
                    },
                );
            }
        }
        Ok(Some((map, txns.len() as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_comparison_wraps() {
        assert!(tid_gt(5, 4));
        assert!(!tid_gt(4, 4));
        assert!(tid_gt(0, u32::MAX));
        assert!(!tid_gt(u32::MAX, 0));
    }
}
