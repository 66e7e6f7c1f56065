//! Finding the log's head (where the next record would have gone) and tail
//! (the oldest record whose changes may not be on disk).
//!
//! The log is written front to back, over and over; each pass has a cycle
//! number one higher than the last, stamped in every block it writes. So
//! the blocks of the current pass carry cycle `c`, the rest `c - 1`, and
//! the head is where the numbers drop:
//!
//! ```text
//!   | c  c  c  c | c-1 c-1 c-1 c-1 |      first block != last block: search
//!                ^ head                   for the first block of cycle c-1
//!   | c  c  c  c  c  c  c  c  c  c |      first == last: the head is at the
//!                                  ^      physical end (wraps to block 0)
//! ```
//!
//! A binary search finds the drop. Up to eight records may have been in
//! flight at the crash and reached the disk out of order, so the blocks
//! before the candidate (one maximal burst of records) are scanned for a
//! hole of the older cycle: the first hole is the head. Then the head is
//! moved back to the start of the last record if that record does not end
//! exactly there. The tail comes from the last record's tail LSN; an
//! unmount record as the last record means the log is clean. A dirty log's
//! last records are read in full, and the head is moved back before the
//! first torn one (a CRC or cycle-stamp mismatch), as the kernel does.

use super::record::{self, cycle_of, lsn_block, Header, OP_UNMOUNT};
use super::{Log, Res, Stop, BB, BBU, MAX_ICLOGS};

/// Blocks read at once when scanning.
const CHUNK: u64 = 128;

pub(crate) enum Ends {
    /// A zeroed log (never written since mkfs or `xfs_repair -L`).
    Empty,
    /// The last record is an unmount record.
    Clean,
    /// The log holds records from `tail` up to `head`.
    Dirty { head: u64, tail: u64 },
}

fn cycle(log: &Log<'_>, blk: u64) -> Res<u32> {
    let mut b = [0u8; BBU];
    log.read(blk, &mut b)?;
    Ok(cycle_of(&b))
}

/// The first block in `start..start + n` (no wrapping) whose cycle is `c`.
fn find_cycle(log: &Log<'_>, start: u64, n: u64, c: u32) -> Res<Option<u64>> {
    let mut buf = vec![0u8; (CHUNK * BB) as usize];
    let mut b = start;
    let end = start + n;
    while b < end {
        let k = CHUNK.min(end - b);
        let part = &mut buf[..(k * BB) as usize];
        log.read(b, part)?;
        for i in 0..k {
            if cycle_of(&part[(i * BB) as usize..]) == c {
                return Ok(Some(b + i));
            }
        }
        b += k;
    }
    Ok(None)
}

/// The last record header in `start..last` (no wrapping), read.
fn last_header(log: &Log<'_>, start: u64, last: u64) -> Res<Option<(u64, Header)>> {
    let mut buf = vec![0u8; (CHUNK * BB) as usize];
    let mut e = last;
    while e > start {
        let k = CHUNK.min(e - start);
        let s = e - k;
        let part = &mut buf[..(k * BB) as usize];
        log.read(s, part)?;
        for i in (0..k).rev() {
            let bb = &part[(i * BB) as usize..((i + 1) * BB) as usize];
            if let Some(h) = Header::parse(bb) {
                return Ok(Some((s + i, h)));
            }
        }
        e = s;
    }
    Ok(None)
}

/// The last header in `start..*last`; when the record it starts does not
/// end at `*last` (less `extra` blocks already past the wrap), `*last`
/// moves back to it. `None` when there is no header in the range.
fn verify_record(log: &Log<'_>, start: u64, last: &mut u64, extra: u64) -> Res<Option<()>> {
    let Some((i, h)) = last_header(log, start, *last)? else {
        return Ok(None);
    };
    if *last - i + extra != h.data_bbs() + h.hblks(log.v2) {
        *last = i;
    }
    Ok(Some(()))
}

/// The last record header before block `from`, searching back at most
/// `limit` blocks (wrapping).
fn rseek(log: &Log<'_>, from: u64, limit: u64) -> Res<Option<(u64, Header)>> {
    let from = from % log.bbs;
    let limit = limit.min(log.bbs);
    let near = limit.min(from);
    if let Some(f) = last_header(log, from - near, from)? {
        return Ok(Some(f));
    }
    let rest = limit - near;
    if rest == 0 {
        return Ok(None);
    }
    last_header(log, log.bbs - rest, log.bbs)
}

fn find_head(log: &Log<'_>) -> Res<Option<u64>> {
    let bbs = log.bbs;
    let first = cycle(log, 0)?;
    if first == 0 {
        return Ok(None);
    }
    let last_blk = bbs - 1;
    let last = cycle(log, last_blk)?;
    let (mut head, stop) = if first == last {
        (bbs, last.wrapping_sub(1))
    } else {
        // cycle(lo) != last, cycle(hi) == last.
        let (mut lo, mut hi) = (0u64, last_blk);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if cycle(log, mid)? == last {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        (hi, last)
    };
    // Holes left by records still in flight at the crash.
    let w = (MAX_ICLOGS * log.rec_bbs()).min(bbs);
    if head >= w {
        if let Some(b) = find_cycle(log, head - w, w, stop)? {
            head = b;
        }
    } else if let Some(b) = find_cycle(log, bbs - (w - head), w - head, stop.wrapping_sub(1))? {
        head = b;
    } else if let Some(b) = find_cycle(log, 0, head, stop)? {
        head = b;
    }
    // The head must not fall inside a record.
    let r = log.rec_bbs().min(bbs);
    let at = log.byte(head);
    let no_header = || Stop::damaged(at, "no log record header before the log head");
    if head >= r {
        verify_record(log, head - r, &mut head, 0)?.ok_or_else(no_header)?;
    } else if verify_record(log, 0, &mut head, 0)?.is_none() {
        let mut new = bbs;
        verify_record(log, bbs - (r - head), &mut new, head)?.ok_or_else(no_header)?;
        if new != bbs {
            head = new;
        }
    }
    Ok(Some(if head == bbs { 0 } else { head }))
}

/// Whether the record at `rblk` (header `h`) is an unmount record ending
/// at `head`.
fn is_unmount(log: &Log<'_>, head: u64, rblk: u64, h: &Header) -> Res<bool> {
    let hblks = h.hblks(log.v2);
    if log.wrap(rblk, hblks + h.data_bbs()) != head || h.num_ops != 1 {
        return Ok(false);
    }
    let mut b = [0u8; BBU];
    log.read(log.wrap(rblk, hblks), &mut b)?;
    Ok(b[9] & OP_UNMOUNT != 0)
}

/// Finds the head and the tail.
pub(crate) fn find(log: &Log<'_>) -> Res<Ends> {
    let Some(mut head) = find_head(log)? else {
        return Ok(Ends::Empty);
    };
    let (mut rblk, mut h) = rseek(log, head, log.bbs)?
        .ok_or_else(|| Stop::damaged(log.start, "no log record header in the log"))?;
    if is_unmount(log, head, rblk, &h)? {
        return Ok(Ends::Clean);
    }
    // Torn writes: read the last records (at most as many as can be in
    // flight) in order; the first that fails ends the log.
    let mut tail = tail_of(log, &h)?;
    let mut starts = Vec::new();
    let mut cur = head;
    while starts.len() < MAX_ICLOGS as usize {
        let back = log.distance(tail, cur);
        if back == 0 {
            break;
        }
        match rseek(log, cur, back)? {
            Some((b, _)) => {
                starts.push(b);
                cur = b;
                if b == tail {
                    break;
                }
            }
            None => break,
        }
    }
    for &b in starts.iter().rev() {
        let torn = match record::read(log, b) {
            Ok(_) => false,
            Err(Stop(r @ flr_fs::NotReplayed::ReadFailed { .. })) => return Err(Stop(r)),
            Err(_) => true,
        };
        if torn {
            head = b;
            let Some((nb, nh)) = rseek(log, head, log.distance(tail, head))? else {
                // Everything after the tail is torn: nothing to replay.
                return Ok(Ends::Dirty { head, tail: head });
            };
            rblk = nb;
            h = nh;
            tail = tail_of(log, &h)?;
            if is_unmount(log, head, rblk, &h)? {
                return Ok(Ends::Clean);
            }
            break;
        }
    }
    let _ = rblk;
    Ok(Ends::Dirty { head, tail })
}

fn tail_of(log: &Log<'_>, h: &Header) -> Res<u64> {
    let t = lsn_block(h.tail_lsn);
    if t >= log.bbs {
        return Err(Stop::damaged(
            log.start,
            format!("log tail block {t} is outside the log"),
        ));
    }
    Ok(t)
}
