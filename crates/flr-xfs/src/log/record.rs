//! Log records: the header, the extended headers of large v2 records, the
//! cycle stamps, the CRC, and the operations inside.
//!
//! Source: XFS Algorithms & Data Structures, "Log Records". Every field is
//! big-endian except the CRC (little-endian).
//!
//! ```text
//! record header (one 512-byte block):
//!   0 magic 0xFEEDBABE | 4 cycle | 8 version | 12 len | 16 lsn u64 | 24 tail lsn u64
//!  32 crc (le) | 36 prev block | 40 number of ops | 44 cycle data [64] u32
//! 300 format | 304 fs uuid [16] | 320 record buffer size
//! extended header (v2, one per further 32 KiB of buffer): 0 cycle | 4 cycle data [64]
//! op header (12 bytes): 0 transaction id | 4 len | 8 client id u8 | 9 flags u8 | 10 pad
//! ```
//!
//! When a record is written, the first word of each of its data blocks is
//! replaced with the cycle number and kept in the cycle data; reading puts
//! the words back ("unpacking"). Blocks written past the physical end of the
//! log carry the next cycle number.

use super::{Log, Res, Stop, BB, BBU, MAX_RECORD_BYTES, V1_RECORD_BYTES};
use crate::bytes::{be32, be64, crc32c, le32};

pub(crate) const MAGIC: u32 = 0xFEED_BABE;
/// Bytes of cycle data one header block carries (64 blocks' worth).
const CYCLE_SPAN: u64 = 32 << 10;
const CYCLE_WORDS: u64 = CYCLE_SPAN / BB;
/// Little-endian Linux, the only format flr (and the kernel of that byte
/// order) replays.
const FMT_LINUX_LE: u32 = 1;

pub(crate) const CLIENT_TRANSACTION: u8 = 0x69;
pub(crate) const CLIENT_LOG: u8 = 0xaa;

/// The op header flags.
pub(crate) const OP_START: u8 = 0x01;
pub(crate) const OP_COMMIT: u8 = 0x02;
pub(crate) const OP_CONTINUE: u8 = 0x04;
pub(crate) const OP_WAS_CONT: u8 = 0x08;
pub(crate) const OP_END: u8 = 0x10;
pub(crate) const OP_UNMOUNT: u8 = 0x20;

/// A record header's fields.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) cycle: u32,
    pub(crate) version: u32,
    pub(crate) len: u32,
    pub(crate) lsn: u64,
    pub(crate) tail_lsn: u64,
    pub(crate) crc: u32,
    pub(crate) num_ops: u32,
    pub(crate) fmt: u32,
    pub(crate) uuid: [u8; 16],
    pub(crate) size: u32,
}

/// Whether a log block starts a record.
pub(crate) fn is_header(bb: &[u8]) -> bool {
    be32(bb, 0) == MAGIC
}

/// The cycle number a log block was written in.
pub(crate) fn cycle_of(bb: &[u8]) -> u32 {
    if is_header(bb) {
        be32(bb, 4)
    } else {
        be32(bb, 0)
    }
}

/// The cycle number after `c` (cycle numbers skip the header magic, so a
/// data block never looks like a header).
pub(crate) fn next_cycle(c: u32) -> u32 {
    match c.wrapping_add(1) {
        MAGIC => MAGIC.wrapping_add(1),
        n => n,
    }
}

/// The block part of an LSN.
pub(crate) fn lsn_block(lsn: u64) -> u64 {
    lsn & 0xffff_ffff
}

impl Header {
    pub(crate) fn parse(b: &[u8]) -> Option<Header> {
        if !is_header(b) || b.len() < BBU {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[304..320]);
        Some(Header {
            cycle: be32(b, 4),
            version: be32(b, 8),
            len: be32(b, 12),
            lsn: be64(b, 16),
            tail_lsn: be64(b, 24),
            crc: le32(b, 32),
            num_ops: be32(b, 40),
            fmt: be32(b, 300),
            uuid,
            size: be32(b, 320),
        })
    }

    /// Header blocks of this record: one, plus one per further 32 KiB of
    /// record buffer in a v2 log.
    pub(crate) fn hblks(&self, v2: bool) -> u64 {
        let size = u64::from(self.size);
        if v2 && size > CYCLE_SPAN {
            size.div_ceil(CYCLE_SPAN)
        } else {
            1
        }
    }

    /// Data blocks.
    pub(crate) fn data_bbs(&self) -> u64 {
        u64::from(self.len).div_ceil(BB)
    }
}

/// One record, read and checked, its data unpacked.
pub(crate) struct Record {
    pub(crate) blk: u64,
    pub(crate) hdr: Header,
    pub(crate) hblks: u64,
    /// The record's data, `hdr.len` bytes, cycle words restored.
    pub(crate) data: Vec<u8>,
}

impl Record {
    /// Log blocks the record occupies.
    pub(crate) fn bbs(&self) -> u64 {
        self.hblks + self.hdr.data_bbs()
    }
}

/// Reads the record at log block `blk` and checks it: header fields,
/// lengths, cycle stamps and (v5, or any record that carries one) the CRC.
pub(crate) fn read(log: &Log<'_>, blk: u64) -> Res<Record> {
    let at = log.byte(blk);
    let mut first = vec![0u8; BBU];
    log.read(blk, &mut first)?;
    let hdr = Header::parse(&first)
        .ok_or_else(|| Stop::damaged(at, "no log record header where one should start"))?;
    let bad = |what: String| Stop::damaged(at, format!("log record: {what}"));
    if hdr.version == 0 || hdr.version & !3 != 0 {
        return Err(bad(format!("unknown version {}", hdr.version)));
    }
    let bufsize = if log.v2 {
        let size = u64::from(hdr.size);
        if size == 0 || size > MAX_RECORD_BYTES {
            return Err(bad(format!("record buffer size {size}")));
        }
        // Old mkfs versions wrote one-op records longer than their stated size.
        if u64::from(hdr.len) > size && hdr.num_ops == 1 {
            MAX_RECORD_BYTES
        } else {
            size
        }
    } else {
        V1_RECORD_BYTES
    };
    if hdr.len == 0 || u64::from(hdr.len) > bufsize {
        return Err(bad(format!(
            "length {} (record buffer {bufsize} bytes)",
            hdr.len
        )));
    }
    let hblks = hdr.hblks(log.v2);
    let dbbs = hdr.data_bbs();
    if hblks + dbbs > log.bbs {
        return Err(bad("longer than the log".into()));
    }
    // OK to cast: at most 8 blocks (256 KiB / 32 KiB) and 256 KiB.
    let mut hb = vec![0u8; (hblks * BB) as usize];
    log.read(blk, &mut hb)?;
    let mut data = vec![0u8; (dbbs * BB) as usize];
    log.read(log.wrap(blk, hblks), &mut data)?;

    // Cycle stamps: blocks past the physical end carry the next cycle.
    let expect = |pos: u64| {
        if blk + pos >= log.bbs {
            next_cycle(hdr.cycle)
        } else {
            hdr.cycle
        }
    };
    for j in 1..hblks {
        let o = (j * BB) as usize;
        if be32(&hb, o) != expect(j) {
            return Err(bad(format!(
                "extended header {j} has a stale cycle number (torn write)"
            )));
        }
    }
    for i in 0..dbbs {
        if be32(&data, (i * BB) as usize) != expect(hblks + i) {
            return Err(bad(format!(
                "data block {i} has cycle {} instead of {} (torn write)",
                be32(&data, (i * BB) as usize),
                expect(hblks + i)
            )));
        }
    }

    // The CRC covers the header (its C struct size: 328 bytes on 64-bit
    // hosts, 324 on i386), the extended headers the data needs, and the
    // data as written (cycle stamps in place).
    let len = hdr.len as usize;
    if log.sb.is_v5() || hdr.crc != 0 {
        let xheads = u64::from(hdr.len).div_ceil(CYCLE_SPAN);
        if xheads > hblks {
            return Err(bad("more data than its headers describe".into()));
        }
        let mut h = hb[..328].to_vec();
        h[32..36].fill(0);
        let mut parts: Vec<&[u8]> = vec![&h];
        for j in 1..xheads {
            let o = (j * BB) as usize;
            parts.push(&hb[o..o + 260]);
        }
        parts.push(&data[..len]);
        let c64 = crc32c(&parts);
        // Only a log from an i386 kernel needs the second sum.
        let matches = hdr.crc == c64 || {
            parts[0] = &h[..324];
            hdr.crc == crc32c(&parts)
        };
        if !matches {
            return Err(bad(format!(
                "CRC mismatch (stored {:#010x}, computed {c64:#010x})",
                hdr.crc
            )));
        }
    }

    // Unpack.
    for i in 0..dbbs {
        let word = if i < CYCLE_WORDS {
            be32(&hb, (44 + 4 * i) as usize)
        } else {
            let j = i / CYCLE_WORDS;
            let k = i % CYCLE_WORDS;
            if j >= hblks {
                return Err(bad("cycle data past the extended headers".into()));
            }
            be32(&hb, (j * BB + 4 + 4 * k) as usize)
        };
        let o = (i * BB) as usize;
        data[o..o + 4].copy_from_slice(&word.to_be_bytes());
    }
    data.truncate(len);
    Ok(Record {
        blk,
        hdr,
        hblks,
        data,
    })
}

/// Checks what only a replay needs: the log was written by a
/// little-endian Linux host, for this filesystem.
pub(crate) fn check_host(log: &Log<'_>, rec: &Record) -> Res<()> {
    if rec.hdr.fmt != FMT_LINUX_LE {
        return Err(Stop::unsupported(format!(
            "log record format {} (written by a big-endian or non-Linux host)",
            rec.hdr.fmt
        )));
    }
    if rec.hdr.uuid != log.sb.uuid {
        return Err(Stop::damaged(
            log.byte(rec.blk),
            "log record belongs to another filesystem (UUID differs)",
        ));
    }
    Ok(())
}

/// One operation of a record.
pub(crate) struct Op<'r> {
    pub(crate) tid: u32,
    pub(crate) client: u8,
    pub(crate) flags: u8,
    pub(crate) data: &'r [u8],
}

/// The operations of a record, in order.
pub(crate) fn ops<'r>(log: &Log<'_>, rec: &'r Record) -> Res<Vec<Op<'r>>> {
    let d = &rec.data;
    let at = log.byte(rec.blk);
    let mut out = Vec::new();
    let mut o = 0usize;
    for n in 0..rec.hdr.num_ops {
        if o >= d.len() {
            break;
        }
        let Some(h) = d.get(o..o + 12) else {
            return Err(Stop::damaged(
                at,
                format!("log record: op header {n} past the end of the record"),
            ));
        };
        let len = be32(h, 4) as usize;
        let start = o + 12;
        let Some(data) = start.checked_add(len).and_then(|e| d.get(start..e)) else {
            return Err(Stop::damaged(
                at,
                format!("log record: op {n} of {len} bytes runs past the record"),
            ));
        };
        out.push(Op {
            tid: be32(h, 0),
            client: h[8],
            flags: h[9],
            data,
        });
        o = start + len;
    }
    Ok(out)
}
