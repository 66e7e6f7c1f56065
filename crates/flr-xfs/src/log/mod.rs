//! XFS log recovery, in memory.
//!
//! Source: XFS Algorithms & Data Structures, "Journaling Log" and "Log
//! Items", and the design of the kernel's `xfs_log_recover.c` (head and
//! tail search, the two recovery passes, the per-item rules), written here
//! from that description. Nothing is ever written to the image: replayed
//! blocks live in an [`Overlay`], a [`flr_io::ReadAt`] over the volume that
//! returns them where the log holds newer copies, and the reader reads
//! through it.
//!
//! ```text
//! log (circular, in 512-byte basic blocks "BB"):
//!   | rec hdr | [ext hdrs] | data BBs ... | rec hdr | ... | head ...stale... tail | ...
//!   each BB's first word is the cycle number of the pass that wrote it (the
//!   words it replaced are kept in the record header's cycle data)
//! record data: ophdr | region | ophdr | region ...   (regions of one transaction
//!   are tied by the ophdr's transaction id; one region may be split across
//!   records: CONTINUE / WAS_CONTINUED)
//! transaction: START | trans header | item regions ... | COMMIT
//! item: format region (type, region count, ...) | data regions
//! ```
//!
//! The steps ([`recover`]):
//! 1. the log's place and size from the superblock (an external log is
//!    reported as [`NotReplayed::ExternalLog`]);
//! 2. the head: the last block written, found by a binary search on the
//!    cycle numbers, a check for holes left by log writes still in flight
//!    at the crash, and a check that the head does not fall inside a record
//!    ([`head`]);
//! 3. the tail, from the last record's tail LSN; an unmount record at the
//!    head means the log is clean; otherwise the last records are checked
//!    for torn writes (CRC on v5, cycle stamps on both) and the head is
//!    moved back before a torn record, as the kernel does;
//! 4. pass 1 walks every record from the tail to the head (header checks,
//!    CRC, cycle data, op headers), assembles transactions and collects
//!    the cancelled buffers (freed metadata whose older logged copies must
//!    not be replayed) and the intents and their done records;
//! 5. pass 2 walks again and applies each committed transaction in commit
//!    order ([`apply`]): buffer items (their dirty 128-byte chunks),
//!    inode-buffer items (the unlinked-list pointers), inode items (core,
//!    data and attribute forks, device number), inode-create items; on v5
//!    an item older than the on-disk metadata's LSN is skipped, on v4 the
//!    inode flush counter decides. Replayed v5 blocks get their LSN and
//!    CRC as the kernel's write verifiers would give them.
//!
//! Items that do not change what flr reads are not applied: extent-free,
//! reverse-mapping and reference-count intents (free space and the AG
//! btrees flr never reads), quota items and quota buffers, logged extended
//! attributes (flr does not read xattrs), and the unlinked inodes the
//! kernel frees after recovery (no directory names them). Bmap and
//! mapping-exchange intents without their done records would change a
//! file's block map after recovery; flr does not redo them and counts them
//! as `unfinished`, as it counts extent-swap owner changes.
//!
//! Anything unknown or damaged (an unknown item type or log feature, a log
//! written on a big-endian host, a CRC mismatch or an impossible length
//! before the last records) stops the replay as a whole: the filesystem is
//! read as it is on disk, and the state says why. A replay is never
//! partial.

mod apply;
mod head;
mod overlay;
mod record;
mod trans;

pub(crate) use overlay::Overlay;

use flr_fs::{Consistency, Journal, NotReplayed, Unmount};
use flr_io::{IoError, ReadAt, Source};

use crate::sb::Superblock;

/// A basic block, the log's unit.
pub(crate) const BB: u64 = 512;
const BBU: usize = 512;
/// Records in flight at once (the kernel's `XLOG_MAX_ICLOGS`).
const MAX_ICLOGS: u64 = 8;
/// The largest log record buffer (256 KiB; v1 logs: 32 KiB).
const MAX_RECORD_BYTES: u64 = 256 << 10;
const V1_RECORD_BYTES: u64 = 32 << 10;
/// Memory held by transactions not yet committed, at most.
const MAX_PENDING_BYTES: u64 = 512 << 20;
/// Open transactions at once, at most.
const MAX_OPEN_TRANS: usize = 1 << 20;
/// Replayed metadata held in memory, at most.
const MAX_OVERLAY_BYTES: u64 = 1 << 30;

const NAME: &str = "log";

/// Why a replay stopped: the typed reason, with the byte offset in the
/// volume where there is one.
#[derive(Debug)]
pub(crate) struct Stop(pub(crate) NotReplayed);

impl Stop {
    pub(crate) fn damaged(offset: u64, what: impl Into<String>) -> Stop {
        Stop(NotReplayed::Damaged {
            offset: Some(offset),
            what: what.into(),
        })
    }
    pub(crate) fn unsupported(what: impl Into<String>) -> Stop {
        Stop(NotReplayed::Unsupported { what: what.into() })
    }
    pub(crate) fn too_large(what: impl Into<String>) -> Stop {
        Stop(NotReplayed::TooLarge { what: what.into() })
    }
}

impl From<IoError> for Stop {
    fn from(e: IoError) -> Stop {
        Stop(NotReplayed::ReadFailed {
            what: e.to_string(),
        })
    }
}

impl From<flr_fs::FsError> for Stop {
    fn from(e: flr_fs::FsError) -> Stop {
        match e {
            flr_fs::FsError::Io(e) => e.into(),
            flr_fs::FsError::Corrupt { offset, what, .. } => {
                Stop(NotReplayed::Damaged { offset, what })
            }
            other => Stop(NotReplayed::Damaged {
                offset: None,
                what: other.to_string(),
            }),
        }
    }
}

pub(crate) type Res<T> = Result<T, Stop>;

/// The internal log's place in the volume.
pub(crate) struct Log<'a> {
    pub(crate) src: &'a dyn ReadAt,
    pub(crate) sb: &'a Superblock,
    /// Byte offset of the log's first block in the volume.
    pub(crate) start: u64,
    /// Size in basic blocks.
    pub(crate) bbs: u64,
    pub(crate) v2: bool,
}

impl<'a> Log<'a> {
    fn new(src: &'a dyn ReadAt, sb: &'a Superblock) -> Res<Log<'a>> {
        let start = sb.fsb_to_byte(sb.logstart).ok_or_else(|| {
            Stop::damaged(
                48,
                format!(
                    "log start block {:#x} is outside the filesystem",
                    sb.logstart
                ),
            )
        })?;
        let bytes = u64::from(sb.logblocks)
            .checked_mul(sb.bs)
            .filter(|&b| b >= 64 * BB)
            .ok_or_else(|| Stop::damaged(96, format!("log size {} blocks", sb.logblocks)))?;
        let end = start
            .checked_add(bytes)
            .filter(|&e| e <= sb.dblocks.saturating_mul(sb.bs) && e <= src.len())
            .ok_or_else(|| Stop::damaged(96, "the log extends past the end of the volume"))?;
        let _ = end;
        Ok(Log {
            src,
            sb,
            start,
            bbs: bytes / BB,
            v2: sb.has_logv2(),
        })
    }

    /// Byte offset in the volume of log block `blk`.
    pub(crate) fn byte(&self, blk: u64) -> u64 {
        self.start + (blk % self.bbs) * BB
    }

    /// `blk` moved by `n` blocks, wrapping at the end of the log.
    pub(crate) fn wrap(&self, blk: u64, n: u64) -> u64 {
        (blk % self.bbs + n % self.bbs) % self.bbs
    }

    /// Blocks from `from` forward to `to` (wrapping).
    pub(crate) fn distance(&self, from: u64, to: u64) -> u64 {
        (to + self.bbs - from % self.bbs) % self.bbs
    }

    /// Reads `buf.len() / 512` blocks from log block `blk`, wrapping at the
    /// physical end of the log.
    pub(crate) fn read(&self, blk: u64, buf: &mut [u8]) -> Res<()> {
        let blk = blk % self.bbs;
        let n = buf.len() as u64 / BB;
        if n > self.bbs {
            return Err(Stop::damaged(
                self.byte(blk),
                "a record longer than the log",
            ));
        }
        let first = n.min(self.bbs - blk);
        let (a, b) = buf.split_at_mut((first * BB) as usize);
        self.src.read_exact_at(self.byte(blk), a)?;
        if !b.is_empty() {
            self.src.read_exact_at(self.start, b)?;
        }
        Ok(())
    }

    /// The largest record, in blocks (the kernel's `XLOG_REC_SHIFT`).
    fn rec_bbs(&self) -> u64 {
        if self.v2 {
            MAX_RECORD_BYTES / BB
        } else {
            V1_RECORD_BYTES / BB
        }
    }
}

/// What a log replay did, item by item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayStats {
    /// Committed transactions walked.
    pub transactions: u64,
    /// Buffer items applied (their dirty chunks).
    pub buffers: u64,
    /// Inode-buffer items applied (unlinked-list pointers).
    pub inode_buffers: u64,
    /// Inode items applied.
    pub inodes: u64,
    /// Inode-create items applied (fresh inode chunks).
    pub inode_creates: u64,
    /// Buffer, inode and inode-create items skipped because the block was
    /// freed later in the log (cancelled).
    pub cancelled: u64,
    /// Buffer and inode items skipped because the metadata on disk is newer
    /// (v5 LSN, v4 inode flush counter).
    pub older_than_disk: u64,
    /// Items that do not change what flr reads (intents, quota, xattrs).
    pub ignored: u64,
    /// Updates the kernel would finish after recovery and flr does not.
    pub unfinished: u64,
    /// Bytes of replayed metadata held in memory.
    pub bytes: u64,
}

/// The outcome of looking at the log.
pub(crate) struct Recovered {
    /// The replayed view, when a replay changed anything.
    pub(crate) overlay: Option<Overlay>,
    pub(crate) stats: Option<ReplayStats>,
    pub(crate) consistency: Consistency,
}

fn state(unmount: Unmount, journal: Journal) -> Consistency {
    Consistency::new(unmount, journal, NAME)
}

/// Finds the log's head and tail and, when `replay` is set and the log is
/// dirty, replays it in memory over `src`. Never fails: what went wrong is
/// in the returned state, and then there is no overlay.
pub(crate) fn recover(src: &Source, sb: &Superblock, replay: bool) -> Recovered {
    if sb.logstart == 0 {
        return Recovered {
            overlay: None,
            stats: None,
            consistency: state(
                Unmount::Unknown,
                Journal::NotReplayed {
                    reason: NotReplayed::ExternalLog,
                },
            ),
        };
    }
    let not = |unmount, reason| Recovered {
        overlay: None,
        stats: None,
        consistency: state(unmount, Journal::NotReplayed { reason }),
    };
    let log = match Log::new(src.as_ref(), sb) {
        Ok(l) => l,
        Err(Stop(r)) => return not(Unmount::Unknown, r),
    };
    let ends = match head::find(&log) {
        Ok(e) => e,
        Err(Stop(r)) => return not(Unmount::Unknown, r),
    };
    let ends = match ends {
        head::Ends::Empty => {
            return Recovered {
                overlay: None,
                stats: None,
                consistency: state(Unmount::Clean, Journal::Clean),
            }
        }
        head::Ends::Clean => {
            return Recovered {
                overlay: None,
                stats: None,
                consistency: state(Unmount::Clean, Journal::Clean),
            }
        }
        head::Ends::Dirty { head, tail } if head == tail => {
            return Recovered {
                overlay: None,
                stats: None,
                consistency: state(Unmount::Dirty, Journal::Clean),
            }
        }
        head::Ends::Dirty { head, tail } => (head, tail),
    };
    if !replay {
        return not(Unmount::Dirty, NotReplayed::Disabled);
    }
    if sb.log_incompat & !apply::LOG_INCOMPAT_KNOWN != 0 {
        return not(
            Unmount::Dirty,
            NotReplayed::Unsupported {
                what: format!(
                    "log incompatible features {:#x}",
                    sb.log_incompat & !apply::LOG_INCOMPAT_KNOWN
                ),
            },
        );
    }
    match apply::replay(&log, src, ends.1, ends.0) {
        Ok((overlay, stats)) => Recovered {
            overlay: Some(overlay),
            consistency: state(
                Unmount::Dirty,
                Journal::Replayed {
                    transactions: stats.transactions,
                    unfinished: stats.unfinished,
                },
            ),
            stats: Some(stats),
        },
        Err(Stop(r)) => not(Unmount::Dirty, r),
    }
}
