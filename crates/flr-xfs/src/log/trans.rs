//! Transactions: the regions of each transaction id, gathered from the op
//! headers of successive records until its commit record.
//!
//! Source: XFS Algorithms & Data Structures, "Log Operations" and
//! "Transaction Headers". A transaction starts with an op flagged START
//! (no data; the LSN of its record orders the transaction), then a
//! transaction header region (`TRAN`, 16 bytes), then its items' regions.
//! A region split across records is flagged CONTINUE in its first part and
//! WAS_CONTINUED in the rest. Ops of transactions whose START lies before
//! the tail are ignored, as the kernel ignores them.
//!
//! Each item's first region is its format (type u16, region count u16,
//! ...), native-endian: the kernel writes these structures in its own byte
//! order (flr replays only little-endian logs, see `record::check_host`).

use std::collections::HashMap;

use super::record::{
    Op, CLIENT_LOG, CLIENT_TRANSACTION, OP_COMMIT, OP_CONTINUE, OP_END, OP_START, OP_UNMOUNT,
    OP_WAS_CONT,
};
use super::{Res, Stop, MAX_OPEN_TRANS, MAX_PENDING_BYTES};
use crate::bytes::{le16, le32};

const TRANS_MAGIC: u32 = 0x5452_414e; // "TRAN"
const TRANS_HEADER_LEN: usize = 16;
/// The most regions one item may have (a 64 KiB buffer's chunks, halved,
/// plus its format), as the kernel bounds it.
const MAX_REGIONS_IN_ITEM: usize = 65536 / 128 / 2 + 1;

/// A committed transaction: its start LSN and regions (the first is the
/// transaction header).
pub(crate) struct Committed {
    pub(crate) lsn: u64,
    /// Byte offset of the record holding the commit (for messages).
    pub(crate) at: u64,
    regions: Vec<Vec<u8>>,
}

impl Committed {
    /// The items: each a slice of regions, the format first.
    pub(crate) fn items(&self) -> Res<Vec<&[Vec<u8>]>> {
        let r = &self.regions;
        let mut out = Vec::new();
        let Some(h) = r.first() else {
            return Ok(out);
        };
        if h.len() != TRANS_HEADER_LEN || le32(h, 0) != TRANS_MAGIC {
            return Err(Stop::damaged(
                self.at,
                "log transaction without its header (TRAN)",
            ));
        }
        let mut i = 1;
        while i < r.len() {
            let size = usize::from(le16(&r[i], 2));
            if r[i].len() < 4 || size == 0 || size > MAX_REGIONS_IN_ITEM {
                return Err(Stop::damaged(
                    self.at,
                    format!("log item with {size} regions"),
                ));
            }
            let end = i
                .checked_add(size)
                .filter(|&e| e <= r.len())
                .ok_or_else(|| {
                    Stop::damaged(
                        self.at,
                        format!("log item of {size} regions has only {}", r.len() - i),
                    )
                })?;
            out.push(&r[i..end]);
            i = end;
        }
        Ok(out)
    }
}

struct Open {
    lsn: u64,
    regions: Vec<Vec<u8>>,
    bytes: u64,
}

/// Gathers the regions of open transactions.
#[derive(Default)]
pub(crate) struct Assembler {
    open: HashMap<u32, Open>,
    pending: u64,
}

impl Assembler {
    /// Takes one op of the record whose LSN is `lsn` (at byte `at`);
    /// returns the transaction it commits, if it is a commit.
    pub(crate) fn op(&mut self, lsn: u64, at: u64, op: &Op<'_>) -> Res<Option<Committed>> {
        if op.client != CLIENT_TRANSACTION && op.client != CLIENT_LOG {
            return Err(Stop::damaged(
                at,
                format!("log op with unknown client id {:#x}", op.client),
            ));
        }
        let Some(t) = self.open.get_mut(&op.tid) else {
            if op.flags & OP_START != 0 {
                if self.open.len() >= MAX_OPEN_TRANS {
                    return Err(Stop::too_large(format!(
                        "more than {MAX_OPEN_TRANS} open transactions"
                    )));
                }
                self.open.insert(
                    op.tid,
                    Open {
                        lsn,
                        regions: Vec::new(),
                        bytes: 0,
                    },
                );
            }
            return Ok(None);
        };
        let mut f = op.flags & !OP_END;
        if f & OP_WAS_CONT != 0 {
            f &= !OP_CONTINUE;
        }
        let len = op.data.len() as u64;
        match f {
            0 | OP_CONTINUE => {
                if !op.data.is_empty() {
                    t.regions.push(op.data.to_vec());
                }
            }
            OP_WAS_CONT => match t.regions.last_mut() {
                Some(r) => r.extend_from_slice(op.data),
                None if op.data.is_empty() => {}
                None => {
                    return Err(Stop::damaged(
                        at,
                        "log region continued with no region to continue",
                    ))
                }
            },
            OP_COMMIT => {
                let t = self.open.remove(&op.tid).expect("OK: looked up above");
                self.pending -= t.bytes;
                return Ok(Some(Committed {
                    lsn: t.lsn,
                    at,
                    regions: t.regions,
                }));
            }
            OP_UNMOUNT => {
                let t = self.open.remove(&op.tid).expect("OK: looked up above");
                self.pending -= t.bytes;
                return Ok(None);
            }
            other => {
                return Err(Stop::damaged(
                    at,
                    format!("log op with flags {other:#x} in an open transaction"),
                ))
            }
        }
        t.bytes += len;
        self.pending += len;
        if self.pending > MAX_PENDING_BYTES {
            return Err(Stop::too_large(format!(
                "open transactions hold more than {} MiB",
                MAX_PENDING_BYTES >> 20
            )));
        }
        Ok(None)
    }
}
