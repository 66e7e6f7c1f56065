//! The two recovery passes and the log items they apply.
//!
//! Source: XFS Algorithms & Data Structures, "Log Items" (buffer, inode,
//! inode-create items and their formats) and the recovery rules of the
//! kernel's log recovery design, in flr's words:
//!
//! * Pass 1 collects cancelled buffers: a buffer item flagged CANCEL says the
//!   block was freed; older logged copies of it must not be written over
//!   whatever reused it. Each cancel is counted per (block, length).
//! * Pass 2 applies committed transactions in commit order. Within one, the
//!   kernel's order: ordinary buffers and inode-create items, then inode
//!   (and other) items, then inode-buffer items, then cancel items. A
//!   buffer or inode item whose (block, length) is still cancelled (a cancel
//!   record for it lies ahead) is skipped; passing a cancel item uses one up.
//! * v5 metadata carries the LSN of its last write: an ordinary buffer
//!   whose on-disk LSN is at or past the transaction's is skipped (the disk
//!   is newer), an inode only when strictly past it. v4 inodes compare
//!   their flush counters. Blocks of unknown type, inode and quota buffers
//!   and v4 blocks are always replayed.
//!
//! ```text
//! buffer format (le):  0 type 0x123c | 2 regions | 4 flags | 6 len (BBs) | 8 blkno (BB)
//!                     16 bitmap words | 20 bitmap: one bit per 128-byte chunk
//! inode format (le):   0 type 0x123b | 2 regions | 4 fields | 8 attr len | 10 data len
//!                     16 ino | 24 rdev | 40 blkno | 48 len | 52 offset in buffer
//!                     (a 52-byte variant from 32-bit kernels: ino at 12, blkno 36)
//! log inode core (le): the on-disk inode core's layout, in host byte order
//! icreate (be after the first 4 bytes): 0 type 0x123f | 2 regions | 4 AG
//!                     8 AG block | 12 count | 16 inode size | 20 length | 24 gen
//! ```

use std::collections::{HashMap, HashSet};

use flr_io::Source;

use super::overlay::{Overlay, Patch};
use super::record;
use super::trans::{Assembler, Committed};
use super::{Log, ReplayStats, Res, Stop, BB};
use crate::bytes::{be16, be32, be64, le16, le32, le64, set_crc};
use crate::sb::Superblock;

/// Log features flr knows: logged extended attributes, logged mapping
/// exchanges.
pub(crate) const LOG_INCOMPAT_KNOWN: u32 = 0x1 | 0x2;

const LI_EFI: u16 = 0x1236;
const LI_EFD: u16 = 0x1237;
const LI_IUNLINK: u16 = 0x1238;
const LI_INODE: u16 = 0x123b;
const LI_BUF: u16 = 0x123c;
const LI_DQUOT: u16 = 0x123d;
const LI_QUOTAOFF: u16 = 0x123e;
const LI_ICREATE: u16 = 0x123f;
const LI_RUI: u16 = 0x1240;
const LI_RUD: u16 = 0x1241;
const LI_CUI: u16 = 0x1242;
const LI_CUD: u16 = 0x1243;
const LI_BUI: u16 = 0x1244;
const LI_BUD: u16 = 0x1245;
const LI_ATTRI: u16 = 0x1246;
const LI_ATTRD: u16 = 0x1247;
const LI_XMI: u16 = 0x1248;
const LI_XMD: u16 = 0x1249;
/// The real-time variants of the extent-free, rmap and refcount items.
const LI_RT_FIRST: u16 = 0x124a;
const LI_RT_LAST: u16 = 0x124f;

const BLF_INODE_BUF: u16 = 0x1;
const BLF_CANCEL: u16 = 0x2;
const BLF_DQUOT_BUF: u16 = 0x4 | 0x8 | 0x10;
const BLF_CHUNK: u64 = 128;
const BLF_MAP_WORDS: u32 = 17;

const ILOG_DDATA: u32 = 0x002;
const ILOG_DEXT: u32 = 0x004;
const ILOG_DBROOT: u32 = 0x008;
const ILOG_DEV: u32 = 0x010;
const ILOG_ADATA: u32 = 0x040;
const ILOG_AEXT: u32 = 0x080;
const ILOG_ABROOT: u32 = 0x100;
const ILOG_DOWNER: u32 = 0x200;
const ILOG_AOWNER: u32 = 0x400;
const ILOG_DFORK: u32 = ILOG_DDATA | ILOG_DEXT | ILOG_DBROOT;
const ILOG_AFORK: u32 = ILOG_ADATA | ILOG_AEXT | ILOG_ABROOT;

const DINODE_MAGIC: u16 = 0x494e;
const NEXT_UNLINKED: usize = 96;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;
const DI_MAX_FLUSH: u16 = 0xffff;

/// A buffer item's format.
struct BufFmt {
    /// First basic block and length in basic blocks.
    blkno: u64,
    len: u64,
    map: Vec<u32>,
}

impl BufFmt {
    fn parse(item: &[Vec<u8>], at: u64, vol_bbs: u64) -> Res<BufFmt> {
        let f = &item[0];
        let bad = |what: &str| Stop::damaged(at, format!("log buffer item: {what}"));
        if f.len() < 20 {
            return Err(bad("format too short"));
        }
        let map_size = le32(f, 16);
        if map_size > BLF_MAP_WORDS || f.len() < 20 + 4 * map_size as usize {
            return Err(bad("dirty bitmap larger than its format"));
        }
        let blkno = le64(f, 8);
        let len = u64::from(le16(f, 6));
        if len == 0 || blkno.checked_add(len).is_none_or(|e| e > vol_bbs) {
            return Err(bad(&format!(
                "block {blkno:#x} (+{len}) is outside the filesystem"
            )));
        }
        Ok(BufFmt {
            blkno,
            len,
            map: (0..map_size as usize)
                .map(|k| le32(f, 20 + 4 * k))
                .collect(),
        })
    }

    fn bit(&self, b: u64) -> bool {
        let w = (b / 32) as usize;
        self.map.get(w).is_some_and(|x| x >> (b % 32) & 1 != 0)
    }

    /// The logged regions: (byte offset in the buffer, data), pairing each
    /// data region with the next run of dirty chunks, as the kernel does.
    fn regions<'i>(&self, item: &'i [Vec<u8>], at: u64) -> Res<Vec<(u64, &'i [u8])>> {
        let nbits = self.map.len() as u64 * 32;
        let mut out = Vec::new();
        let mut bit = 0u64;
        for r in &item[1..] {
            while bit < nbits && !self.bit(bit) {
                bit += 1;
            }
            if bit >= nbits {
                break;
            }
            let mut n = 0u64;
            while bit + n < nbits && self.bit(bit + n) {
                n += 1;
            }
            n = n.min(r.len() as u64 / BLF_CHUNK);
            let off = bit * BLF_CHUNK;
            if off + n * BLF_CHUNK > self.len * BB {
                return Err(Stop::damaged(
                    at,
                    "log buffer item: a dirty region lies past the buffer",
                ));
            }
            // OK to cast: at most the region's length.
            out.push((off, &r[..(n * BLF_CHUNK) as usize]));
            if n == 0 {
                break;
            }
            bit += n;
        }
        Ok(out)
    }
}

/// Where a v5 metadata block keeps its LSN, UUID and CRC, by its magic.
struct Kind {
    lsn: usize,
    uuid: usize,
    crc: usize,
    /// The buffer length the CRC covers, when it is fixed.
    len: Option<u64>,
    /// Another length the CRC may cover (da blocks: directory or attribute).
    alt_len: Option<u64>,
}

fn kind_of(b: &[u8], sb: &Superblock) -> Option<Kind> {
    let bs = sb.bs;
    let dbs = sb.dir_block_size();
    let k = |lsn, uuid, crc, len: Option<u64>| {
        Some(Kind {
            lsn,
            uuid,
            crc,
            len,
            alt_len: None,
        })
    };
    match be32(b, 0) {
        // AG btrees (short form): free space, inodes, free inodes, rmap, refcount.
        0x4142_3342 | 0x4142_3343 | 0x4941_4233 | 0x4649_4233 | 0x524d_4233 | 0x5233_4643 => {
            k(24, 32, 52, Some(bs))
        }
        0x424d_4133 => k(32, 40, 64, Some(bs)), // BMA3
        0x5841_4746 => k(208, 64, 216, None),   // XAGF
        0x5841_464c => k(24, 8, 32, None),      // XAFL
        0x5841_4749 => k(320, 296, 312, None),  // XAGI
        0x5853_4c4d => k(48, 16, 12, Some(bs)), // XSLM
        0x5844_4233 | 0x5844_4433 | 0x5844_4633 => k(16, 24, 4, Some(dbs)), // XDB3 XDD3 XDF3
        0x5846_5342 => {
            let uuid = if sb.meta_uuid != sb.uuid { 248 } else { 32 };
            k(240, uuid, 224, None)
        }
        _ => match be16(b, 8) {
            0x3df1 | 0x3dff | 0x3bee | 0x3ebe => Some(Kind {
                lsn: 24,
                uuid: 32,
                crc: 12,
                len: Some(dbs),
                alt_len: Some(bs),
            }),
            _ => None,
        },
    }
}

/// The LSN of a v5 metadata block as the replay compares it, or `None` to
/// replay regardless (v4, unknown type, inode and quota blocks, remote
/// attribute blocks, a block of another filesystem).
fn buf_lsn(b: &[u8], sb: &Superblock) -> Option<u64> {
    if !sb.is_v5() {
        return None;
    }
    let k = kind_of(b, sb)?;
    let uuid = b.get(k.uuid..k.uuid + 16)?;
    (uuid == sb.meta_uuid).then(|| be64(b, k.lsn))
}

/// The cancelled buffers: (block, length) -> how many cancel records.
#[derive(Default)]
struct Cancels(HashMap<(u64, u64), u32>);

impl Cancels {
    fn is_cancelled(&self, blkno: u64, len: u64) -> bool {
        self.0.contains_key(&(blkno, len))
    }

    /// Passes one cancel record: true when there was one to use.
    fn put(&mut self, blkno: u64, len: u64) -> bool {
        match self.0.get_mut(&(blkno, len)) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.0.remove(&(blkno, len));
                true
            }
            None => false,
        }
    }
}

/// What one item is.
enum What {
    Buf,
    InodeBuf,
    CancelBuf,
    Icreate,
    Inode,
    /// Known, and not needed for what flr reads.
    Ignore,
    Intent(u16),
    Done(u16),
}

fn what(item: &[Vec<u8>], at: u64) -> Res<What> {
    let t = le16(&item[0], 0);
    Ok(match t {
        LI_BUF => {
            let flags = le16(&item[0], 4);
            if flags & BLF_CANCEL != 0 {
                What::CancelBuf
            } else if flags & BLF_INODE_BUF != 0 {
                What::InodeBuf
            } else if flags & BLF_DQUOT_BUF != 0 {
                What::Ignore
            } else {
                What::Buf
            }
        }
        LI_INODE => What::Inode,
        LI_ICREATE => What::Icreate,
        LI_BUI | LI_XMI => What::Intent(t),
        LI_BUD | LI_XMD => What::Done(t - 1),
        LI_EFI | LI_EFD | LI_RUI | LI_RUD | LI_CUI | LI_CUD | LI_ATTRI | LI_ATTRD | LI_DQUOT
        | LI_QUOTAOFF => What::Ignore,
        LI_RT_FIRST..=LI_RT_LAST => What::Ignore,
        LI_IUNLINK => {
            return Err(Stop::damaged(at, "an in-memory-only item type in the log"));
        }
        other => return Err(Stop::unsupported(format!("log item type {other:#06x}"))),
    })
}

/// The replay state of pass 2.
struct Replay<'a> {
    stats: ReplayStats,
    sb: &'a Superblock,
    patch: Patch<'a>,
    cancels: Cancels,
    /// Buffers replayed so far and the LSN of their last replay.
    replayed: HashMap<(u64, u64), u64>,
    replayed_starts: HashSet<u64>,
    vol_bbs: u64,
    /// Owner changes not applied.
    owner_changes: u64,
}

/// Walks the records from `tail` to `head`, handing each committed
/// transaction to `each`.
fn walk(
    log: &Log<'_>,
    tail: u64,
    head: u64,
    each: &mut dyn FnMut(&Committed) -> Res<()>,
) -> Res<()> {
    let total = log.distance(tail, head);
    let mut done = 0u64;
    let mut blk = tail;
    let mut asm = Assembler::default();
    while done < total {
        let rec = record::read(log, blk)?;
        record::check_host(log, &rec)?;
        let n = rec.bbs();
        if done + n > total {
            return Err(Stop::damaged(
                log.byte(blk),
                "log record runs past the log head",
            ));
        }
        let at = log.byte(blk);
        for op in record::ops(log, &rec)? {
            if let Some(c) = asm.op(rec.hdr.lsn, at, &op)? {
                each(&c)?;
            }
        }
        done += n;
        blk = log.wrap(blk, n);
    }
    Ok(())
}

/// Replays the log from `tail` to `head` over `src`: the overlay and what
/// was done.
pub(crate) fn replay(
    log: &Log<'_>,
    src: &Source,
    tail: u64,
    head: u64,
) -> Res<(Overlay, ReplayStats)> {
    let sb = log.sb;
    let vol_bbs = sb.dblocks.saturating_mul(sb.bs).min(src.len()) / BB;
    // Pass 1.
    let mut cancels = Cancels::default();
    let mut intents: HashSet<(u16, u64)> = HashSet::new();
    let mut dones: HashSet<(u16, u64)> = HashSet::new();
    walk(log, tail, head, &mut |c| {
        for item in c.items()? {
            match what(item, c.at)? {
                What::CancelBuf => {
                    let f = BufFmt::parse(item, c.at, vol_bbs)?;
                    *cancels.0.entry((f.blkno, f.len)).or_insert(0) += 1;
                }
                What::Intent(t) => {
                    intents.insert((t, le64(&item[0], 8)));
                }
                What::Done(t) => {
                    dones.insert((t, le64(&item[0], 8)));
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    let unfinished = intents.difference(&dones).count() as u64;

    // Pass 2.
    let mut r = Replay {
        stats: ReplayStats::default(),
        sb,
        patch: Patch::new(src.as_ref()),
        cancels,
        replayed: HashMap::new(),
        replayed_starts: HashSet::new(),
        vol_bbs,
        owner_changes: 0,
    };
    walk(log, tail, head, &mut |c| {
        r.stats.transactions += 1;
        r.transaction(c)
    })?;
    r.fixups()?;
    let mut stats = r.stats;
    stats.unfinished = unfinished + r.owner_changes;
    let overlay = r.patch.finish(src.clone());
    stats.bytes = overlay.bytes();
    Ok((overlay, stats))
}

impl Replay<'_> {
    fn transaction(&mut self, c: &Committed) -> Res<()> {
        let items = c.items()?;
        let mut first = Vec::new();
        let mut middle = Vec::new();
        let mut inode_bufs = Vec::new();
        let mut cancels = Vec::new();
        for item in items {
            match what(item, c.at)? {
                w @ (What::Buf | What::Icreate) => first.push((w, item)),
                What::InodeBuf => inode_bufs.push((What::InodeBuf, item)),
                What::CancelBuf => cancels.push((What::CancelBuf, item)),
                w => middle.push((w, item)),
            }
        }
        inode_bufs.reverse();
        cancels.reverse();
        for (w, item) in first
            .into_iter()
            .chain(middle)
            .chain(inode_bufs)
            .chain(cancels)
        {
            match w {
                What::Buf | What::InodeBuf => self.buffer(item, c, matches!(w, What::InodeBuf))?,
                What::CancelBuf => {
                    let f = BufFmt::parse(item, c.at, self.vol_bbs)?;
                    self.cancels.put(f.blkno, f.len);
                }
                What::Icreate => self.icreate(item, c)?,
                What::Inode => self.inode(item, c)?,
                What::Ignore | What::Intent(_) | What::Done(_) => self.stats.ignored += 1,
            }
        }
        Ok(())
    }

    fn buffer(&mut self, item: &[Vec<u8>], c: &Committed, inode_buf: bool) -> Res<()> {
        let f = BufFmt::parse(item, c.at, self.vol_bbs)?;
        if self.cancels.is_cancelled(f.blkno, f.len) {
            self.stats.cancelled += 1;
            return Ok(());
        }
        let base = f.blkno * BB;
        let regions = f.regions(item, c.at)?;
        if inode_buf {
            self.stats.inode_buffers += 1;
            return self.inode_buffer(&f, &regions);
        }
        if !self.replayed_starts.contains(&f.blkno) {
            let mut head = vec![0u8; BB as usize];
            self.patch.read(base, &mut head)?;
            if let Some(lsn) = buf_lsn(&head, self.sb) {
                if lsn != 0 && lsn != u64::MAX && lsn >= c.lsn {
                    self.stats.older_than_disk += 1;
                    return Ok(()); // the disk is newer
                }
            }
        }
        self.stats.buffers += 1;
        for (off, data) in regions {
            self.patch.write(base + off, data)?;
        }
        self.replayed.insert((f.blkno, f.len), c.lsn);
        self.replayed_starts.insert(f.blkno);
        Ok(())
    }

    /// An inode buffer logged for its unlinked-list pointers: only those
    /// pointers are taken from the log.
    fn inode_buffer(&mut self, f: &BufFmt, regions: &[(u64, &[u8])]) -> Res<()> {
        let isz = u64::from(self.sb.inodesize);
        let base = f.blkno * BB;
        for i in 0..(f.len * BB) / isz {
            let field = i * isz + NEXT_UNLINKED as u64;
            let Some((off, data)) = regions
                .iter()
                .find(|(o, d)| *o <= field && field + 4 <= *o + d.len() as u64)
            else {
                continue;
            };
            // OK to cast: inside the region.
            let v = &data[(field - off) as usize..(field - off) as usize + 4];
            if v == [0, 0, 0, 0] {
                return Err(Stop::damaged(
                    base + field,
                    "log inode buffer item sets an unlinked pointer to 0",
                ));
            }
            let at = base + i * isz;
            let mut ino = vec![0u8; isz as usize];
            self.patch.read(at, &mut ino)?;
            ino[NEXT_UNLINKED..NEXT_UNLINKED + 4].copy_from_slice(v);
            if self.sb.is_v5() {
                set_crc(&mut ino, 100);
            }
            self.patch.write(at, &ino)?;
        }
        Ok(())
    }

    fn icreate(&mut self, item: &[Vec<u8>], c: &Committed) -> Res<()> {
        let sb = self.sb;
        let r = &item[0];
        let bad = |what: String| Stop::damaged(c.at, format!("log inode-create item: {what}"));
        if r.len() < 28 || item.len() != 1 {
            return Err(bad("format too short".into()));
        }
        let (agno, agbno, count, isize, length, gen) = (
            be32(r, 4),
            be32(r, 8),
            be32(r, 12),
            be32(r, 16),
            be32(r, 20),
            be32(r, 24),
        );
        if agno >= sb.agcount
            || agbno == 0
            || agbno >= sb.agblocks
            || isize != sb.inodesize
            || count == 0
            || length == 0
            || agbno.checked_add(length).is_none_or(|e| e > sb.agblocks)
            || u64::from(count) >> sb.inopblog != u64::from(length)
            || count > 1 << 16
        {
            return Err(bad(format!(
                "AG {agno} block {agbno}, {count} inodes of {isize} bytes in {length} blocks"
            )));
        }
        // Inode cluster geometry, as the kernel computes it.
        let bs = sb.bs;
        let mut raw = 8192u64;
        if sb.is_v5() {
            let bigger = raw * u64::from(sb.inodesize) / 256;
            if u64::from(sb.inoalignmt) >= bigger / bs {
                raw = bigger;
            }
        }
        let bpc = if bs >= raw { 1 } else { raw / bs };
        let ag_first = u64::from(agno) * u64::from(sb.agblocks) + u64::from(agbno);
        let per_bb = bs / BB;
        let mut cancelled = 0;
        for j in 0..u64::from(length) / bpc {
            if self
                .cancels
                .is_cancelled((ag_first + j * bpc) * per_bb, bpc * per_bb)
            {
                cancelled += 1;
            }
        }
        if cancelled > 0 {
            self.stats.cancelled += 1;
            return Ok(());
        }
        self.stats.inode_creates += 1;
        let isz = u64::from(sb.inodesize);
        let per_block = bs / isz;
        let mut chunk = vec![0u8; (u64::from(length) * bs) as usize];
        for b in 0..u64::from(length) {
            for i in 0..per_block {
                let ino = (u64::from(agno) << (u32::from(sb.agblklog) + u32::from(sb.inopblog)))
                    | ((u64::from(agbno) + b) << sb.inopblog)
                    | i;
                let o = ((b * per_block + i) * isz) as usize;
                let d = &mut chunk[o..o + isz as usize];
                d[0..2].copy_from_slice(&DINODE_MAGIC.to_be_bytes());
                d[4] = if sb.is_v5() { 3 } else { 2 };
                d[92..96].copy_from_slice(&gen.to_be_bytes());
                d[96..100].copy_from_slice(&u32::MAX.to_be_bytes());
                if sb.is_v5() {
                    d[152..160].copy_from_slice(&ino.to_be_bytes());
                    d[160..176].copy_from_slice(&sb.meta_uuid);
                    set_crc(d, 100);
                }
            }
        }
        self.patch.write(ag_first * bs, &chunk)
    }

    fn inode(&mut self, item: &[Vec<u8>], c: &Committed) -> Res<()> {
        let sb = self.sb;
        let f = &item[0];
        let bad = |what: String| Stop::damaged(c.at, format!("log inode item: {what}"));
        // The 64-bit format, or the packed one 32-bit kernels wrote.
        let (ino, rdev, blkno, len, boff) = match f.len() {
            56 => (
                le64(f, 16),
                le32(f, 24),
                le64(f, 40),
                le32(f, 48),
                le32(f, 52),
            ),
            52 => (
                le64(f, 12),
                le32(f, 20),
                le64(f, 36),
                le32(f, 44),
                le32(f, 48),
            ),
            n => return Err(bad(format!("format of {n} bytes"))),
        };
        let fields = le32(f, 4);
        let nregions = usize::from(le16(f, 2));
        if !(2..=4).contains(&nregions) || nregions != item.len() {
            return Err(bad(format!("{nregions} regions")));
        }
        let (len, boff) = (u64::from(len), u64::from(boff));
        if self.cancels.is_cancelled(blkno, len) {
            self.stats.cancelled += 1;
            return Ok(());
        }
        let isz = u64::from(sb.inodesize);
        let at = blkno
            .checked_mul(BB)
            .and_then(|b| b.checked_add(boff))
            .filter(|_| boff + isz <= len * BB)
            .ok_or_else(|| bad(format!("inode {ino} outside its buffer")))?;
        if sb.ino_to_byte(ino) != Some(at) {
            return Err(bad(format!(
                "inode {ino} logged at byte {at:#x}, which is not where it lives"
            )));
        }
        let mut d = vec![0u8; isz as usize];
        self.patch.read(at, &mut d)?;
        if be16(&d, 0) != DINODE_MAGIC {
            return Err(Stop::damaged(
                at,
                format!("inode {ino}: the log replays over a block that holds no inode"),
            ));
        }
        let l = &item[1];
        if le16(l, 0) != DINODE_MAGIC {
            return Err(bad(format!("inode {ino}: logged core without its magic")));
        }
        let ver = l.get(4).copied().unwrap_or(0);
        let want = if sb.is_v5() { 176 } else { 96 };
        let ver_ok = if sb.is_v5() {
            ver == 3
        } else {
            ver == 1 || ver == 2
        };
        if !ver_ok || l.len() != want {
            return Err(bad(format!(
                "inode {ino}: logged core version {ver}, {} bytes",
                l.len()
            )));
        }
        if d[4] >= 3 {
            let lsn = be64(&d, 112);
            if lsn != 0 && lsn != u64::MAX && lsn > c.lsn {
                self.stats.older_than_disk += 1;
                return Ok(()); // the disk is newer
            }
        }
        if !sb.is_v5() {
            let logged = le16(l, 30);
            let disk = be16(&d, 30);
            if logged < disk && !(disk == DI_MAX_FLUSH && logged < DI_MAX_FLUSH >> 1) {
                self.stats.older_than_disk += 1;
                return Ok(()); // flushed since
            }
        }
        let mode = le16(l, 2);
        let format = l[5];
        let fmt_ok = match mode & 0o170000 {
            0o100000 => matches!(format, 2 | 3),
            0o040000 => matches!(format, 1..=3),
            _ => true,
        };
        let flags2 = if ver >= 3 { le64(l, 120) } else { 0 };
        let nrext64 = flags2 & DIFLAG2_NREXT64 != 0;
        let (nex, anex) = if nrext64 {
            (le64(l, 24), u64::from(le32(l, 76)))
        } else {
            (u64::from(le32(l, 76)), u64::from(le16(l, 80)))
        };
        if !fmt_ok || nex.saturating_add(anex) > le64(l, 64) || u64::from(l[82]) * 8 > isz {
            return Err(bad(format!(
                "inode {ino}: logged core is inconsistent (mode {mode:o}, format {format})"
            )));
        }
        log_core_to_disk(l, &mut d, c.lsn);
        let core = if ver == 3 { 176usize } else { 100 };
        let forkoff = usize::from(d[82]) * 8;
        let isz = d.len();
        if core + forkoff > isz {
            return Err(bad(format!("inode {ino}: attribute fork past the inode")));
        }
        let dsize = if forkoff != 0 { forkoff } else { isz - core };
        if fields & ILOG_DEV != 0 {
            d[core..core + 4].copy_from_slice(&rdev.to_be_bytes());
        }
        let v5 = sb.is_v5();
        let mut idx = 2;
        if fields & ILOG_DFORK != 0 && nregions > 2 {
            let src = &item[2];
            let dst = &mut d[core..core + dsize];
            match fields & ILOG_DFORK {
                ILOG_DDATA | ILOG_DEXT => copy_fork(src, dst)
                    .ok_or_else(|| bad(format!("inode {ino}: data fork larger than the inode")))?,
                ILOG_DBROOT => bmbt_to_root(src, dst, v5)
                    .ok_or_else(|| bad(format!("inode {ino}: bad data fork B+tree root")))?,
                _ => return Err(bad(format!("inode {ino}: fields {fields:#x}"))),
            }
            idx = 3;
        }
        if fields & ILOG_AFORK != 0 {
            let src = item
                .get(idx)
                .ok_or_else(|| bad(format!("inode {ino}: attribute fork region missing")))?;
            if forkoff == 0 {
                return Err(bad(format!(
                    "inode {ino}: attribute fork without a fork offset"
                )));
            }
            let dst = &mut d[core + forkoff..];
            match fields & ILOG_AFORK {
                ILOG_ADATA | ILOG_AEXT => copy_fork(src, dst).ok_or_else(|| {
                    bad(format!("inode {ino}: attribute fork larger than the inode"))
                })?,
                ILOG_ABROOT => bmbt_to_root(src, dst, v5)
                    .ok_or_else(|| bad(format!("inode {ino}: bad attribute fork B+tree root")))?,
                _ => return Err(bad(format!("inode {ino}: fields {fields:#x}"))),
            }
        }
        if fields & (ILOG_DOWNER | ILOG_AOWNER) != 0 && be16(&d, 2) != 0 {
            // An extent swap changed the owner of the fork's B+tree blocks;
            // flr does not rewrite them (the reader then reports those
            // blocks as belonging to another inode, never wrong bytes).
            self.owner_changes += 1;
        }
        if ver == 3 {
            set_crc(&mut d, 100);
        }
        self.stats.inodes += 1;
        self.patch.write(at, &d)
    }

    /// Gives every replayed v5 block the LSN and CRC the kernel's write
    /// verifiers would give it.
    fn fixups(&mut self) -> Res<()> {
        if !self.sb.is_v5() {
            return Ok(());
        }
        let mut todo: Vec<((u64, u64), u64)> =
            self.replayed.iter().map(|(&k, &v)| (k, v)).collect();
        todo.sort_unstable();
        for ((blkno, len), lsn) in todo {
            let base = blkno * BB;
            let bytes = len * BB;
            let mut b = vec![0u8; bytes as usize];
            self.patch.read(base, &mut b)?;
            let Some(k) = kind_of(&b, self.sb) else {
                continue;
            };
            if k.len.is_some_and(|l| l != bytes) && k.alt_len.is_none_or(|l| l != bytes) {
                continue; // one piece of a discontiguous buffer: leave it
            }
            if k.crc + 4 > b.len() || k.lsn + 8 > b.len() {
                continue;
            }
            b[k.lsn..k.lsn + 8].copy_from_slice(&lsn.to_be_bytes());
            set_crc(&mut b, k.crc);
            let lo = k.lsn.min(k.crc);
            let hi = (k.lsn + 8).max(k.crc + 4);
            self.patch.write(base + lo as u64, &b[lo..hi])?;
        }
        Ok(())
    }
}

fn copy_fork(src: &[u8], dst: &mut [u8]) -> Option<()> {
    dst.get_mut(..src.len())?.copy_from_slice(src);
    Some(())
}

/// Converts a logged B+tree root (an in-memory block: full header, then
/// keys, then pointers laid out for its own size) into the inode's root
/// (level, count, keys, pointers laid out for the fork's size).
fn bmbt_to_root(src: &[u8], dst: &mut [u8], v5: bool) -> Option<()> {
    let hdr = if v5 { 72 } else { 24 };
    if src.len() < hdr || dst.len() < 4 {
        return None;
    }
    let level = be16(src, 4);
    let n = usize::from(be16(src, 6));
    let smax = (src.len() - hdr) / 16;
    let dmax = (dst.len() - 4) / 16;
    if level == 0 || n > smax || n > dmax {
        return None;
    }
    dst[0..2].copy_from_slice(&src[4..6]);
    dst[2..4].copy_from_slice(&src[6..8]);
    dst[4..4 + n * 8].copy_from_slice(&src[hdr..hdr + n * 8]);
    let sp = hdr + smax * 8;
    let dp = 4 + dmax * 8;
    dst[dp..dp + n * 8].copy_from_slice(&src[sp..sp + n * 8]);
    Some(())
}

/// Writes a logged inode core (host byte order, little-endian here) into
/// the on-disk inode `d` (big-endian), as the kernel does on recovery:
/// every core field but the unlinked pointer, the flush counter reset, the
/// v3 LSN set to the transaction's.
fn log_core_to_disk(l: &[u8], d: &mut [u8], lsn: u64) {
    let p16 = |d: &mut [u8], o: usize, v: u16| d[o..o + 2].copy_from_slice(&v.to_be_bytes());
    let p32 = |d: &mut [u8], o: usize, v: u32| d[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let p64 = |d: &mut [u8], o: usize, v: u64| d[o..o + 8].copy_from_slice(&v.to_be_bytes());
    let ver = l[4];
    let flags2 = if ver >= 3 { le64(l, 120) } else { 0 };
    let bigtime = flags2 & DIFLAG2_BIGTIME != 0;
    let nrext64 = flags2 & DIFLAG2_NREXT64 != 0;
    let ts = |d: &mut [u8], o: usize| {
        if bigtime {
            p64(d, o, le64(l, o));
        } else {
            p32(d, o, le32(l, o));
            p32(d, o + 4, le32(l, o + 4));
        }
    };
    p16(d, 0, le16(l, 0));
    p16(d, 2, le16(l, 2));
    d[4] = l[4];
    d[5] = l[5];
    p16(d, 6, le16(l, 6));
    for o in [8, 12, 16] {
        p32(d, o, le32(l, o));
    }
    p16(d, 20, le16(l, 20));
    p16(d, 22, le16(l, 22));
    ts(d, 32);
    ts(d, 40);
    ts(d, 48);
    p64(d, 56, le64(l, 56));
    p64(d, 64, le64(l, 64));
    p32(d, 72, le32(l, 72));
    d[82] = l[82];
    d[83] = l[83];
    p32(d, 84, le32(l, 84));
    p16(d, 88, le16(l, 88));
    p16(d, 90, le16(l, 90));
    p32(d, 92, le32(l, 92));
    if ver == 3 {
        p64(d, 104, le64(l, 104));
        p64(d, 112, lsn);
        p64(d, 120, flags2);
        p32(d, 128, le32(l, 128));
        d[132..144].fill(0);
        ts(d, 144);
        p64(d, 152, le64(l, 152));
        d[160..176].copy_from_slice(&l[160..176]);
        p64(d, 24, 0);
    } else {
        d[24..30].fill(0);
        p16(d, 30, 0);
    }
    if nrext64 {
        p64(d, 24, le64(l, 24));
        p32(d, 76, le32(l, 76));
        p16(d, 80, le16(l, 80));
    } else {
        p32(d, 76, le32(l, 76));
        p16(d, 80, le16(l, 80));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_regions_pair_with_runs_of_dirty_chunks() {
        // Chunks 0 and 2..4 dirty; the second run's region is shorter than
        // the run (a page boundary split it), so only its length is copied.
        let f = BufFmt {
            blkno: 0,
            len: 8,
            map: vec![0b11101],
        };
        let item = vec![vec![0u8; 24], vec![1u8; 128], vec![2u8; 256]];
        let r = f.regions(&item, 0).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[0].1.len()), (0, 128));
        assert_eq!((r[1].0, r[1].1.len()), (256, 256));
    }

    #[test]
    fn cancels_count_down() {
        let mut c = Cancels::default();
        *c.0.entry((8, 8)).or_insert(0) += 2;
        assert!(c.is_cancelled(8, 8));
        assert!(!c.is_cancelled(8, 16));
        assert!(c.put(8, 8));
        assert!(c.is_cancelled(8, 8));
        assert!(c.put(8, 8));
        assert!(!c.is_cancelled(8, 8));
        assert!(!c.put(8, 8));
    }

    #[test]
    fn broot_conversion() {
        // An in-memory root of 2 records laid out for 4, into a fork of 3.
        let mut src = vec![0u8; 24 + 4 * 16];
        src[4..6].copy_from_slice(&1u16.to_be_bytes());
        src[6..8].copy_from_slice(&2u16.to_be_bytes());
        src[24..32].fill(0x11);
        src[32..40].fill(0x22);
        src[24 + 32..24 + 40].fill(0x33);
        src[24 + 40..24 + 48].fill(0x44);
        let mut dst = vec![0u8; 4 + 3 * 16];
        bmbt_to_root(&src, &mut dst, false).unwrap();
        assert_eq!(&dst[0..4], &[0, 1, 0, 2]);
        assert_eq!(&dst[4..20], &[[0x11u8; 8], [0x22; 8]].concat()[..]);
        assert_eq!(&dst[28..44], &[[0x33u8; 8], [0x44; 8]].concat()[..]);
        assert!(bmbt_to_root(&src, &mut [0u8; 20], false).is_none());
    }
}
