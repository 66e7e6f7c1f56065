//! Reading a file: its extents are mapped once when it is opened; each read
//! then copies inline data, fills holes and preallocated ranges with zeros,
//! reads uncompressed extents straight into the caller's buffer (one
//! positioned read per contiguous device run) and decompresses compressed
//! extents one at a time, keeping the last one. Data checksums are checked
//! sector by sector where the csum tree has them; a sector that fails is
//! read from the next copy (or rebuilt from parity), and when every way
//! fails the read is an error naming the logical address.

use flr_fs::{FileHandle, FsError};
use flr_io::Bounce;

use crate::compress::{self, Decoders};
use crate::items::{file_extent, ExtentKind, COMPRESS_NONE};
use crate::tree::{Item, Key, Root, EXTENT_CSUM, EXTENT_DATA};
use crate::volume::logical_err;
use crate::Inner;

/// The objectid of every EXTENT_CSUM item (`-10` as u64).
pub(crate) const EXTENT_CSUM_OBJECTID: u64 = (-10i64) as u64;

/// Extents one file may have (about 400 MiB of extent list at most).
const MAX_EXTENTS: usize = 4 << 20;
/// Inline bytes one file may hold in memory.
const MAX_INLINE_TOTAL: usize = 16 << 20;

/// One mapped extent: file bytes `start..start + len`.
#[derive(Debug, Clone)]
pub(crate) struct Extent {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) kind: ExtentKind,
}

fn corrupt_in(leaf: u64, what: impl std::fmt::Display) -> FsError {
    logical_err(leaf, format!("tree block: {what}"))
}

/// Maps the extents of inode `ino` in the tree at `root`.
pub(crate) fn map(inner: &Inner, root: Root, ino: u64) -> Result<Vec<Extent>, FsError> {
    let mut out: Vec<Extent> = Vec::new();
    let mut inline_total = 0usize;
    for it in inner.trees.items_of(root, ino, EXTENT_DATA)? {
        let it = it?;
        let fe = file_extent(it.data()).map_err(|e| {
            if let Some(reason) = e.strip_prefix("unsupported: ") {
                FsError::Unsupported {
                    path: format!("inode {ino}"),
                    reason: reason.to_string(),
                }
            } else {
                corrupt_in(it.leaf(), format!("inode {ino}: {e}"))
            }
        })?;
        let start = it.key.offset;
        let bad = |what: &str| {
            corrupt_in(
                it.leaf(),
                format!("inode {ino}, extent at file offset {start}: {what}"),
            )
        };
        match &fe.kind {
            ExtentKind::Inline {
                compression,
                ram_bytes,
                data,
            } => {
                let limit = if *compression == COMPRESS_NONE {
                    data.len() as u64
                } else {
                    compress::MAX_RAM
                };
                if *ram_bytes > limit {
                    return Err(bad("inline extent larger than its data"));
                }
                inline_total += data.len();
                if inline_total > MAX_INLINE_TOTAL {
                    return Err(bad("too much inline data"));
                }
            }
            ExtentKind::Regular {
                compression,
                disk_bytenr,
                disk_num_bytes,
                ram_bytes,
                offset,
            } => {
                let end = offset.checked_add(fe.len);
                if *compression != COMPRESS_NONE {
                    if *ram_bytes > compress::MAX_RAM || *disk_num_bytes > compress::MAX_RAM {
                        return Err(bad("compressed extent larger than 128 KiB"));
                    }
                    if end.is_none_or(|e| e > *ram_bytes) {
                        return Err(bad("file range outside the decompressed extent"));
                    }
                } else if end.is_none_or(|e| e > *disk_num_bytes) {
                    return Err(bad("file range outside the extent"));
                }
                if disk_bytenr.checked_add(*disk_num_bytes).is_none() {
                    return Err(bad("extent address overflows"));
                }
            }
            ExtentKind::Hole | ExtentKind::Prealloc => {}
        }
        if fe.len == 0 {
            continue;
        }
        if start.checked_add(fe.len).is_none() {
            return Err(bad("extent end overflows"));
        }
        if let Some(prev) = out.last() {
            if start < prev.start + prev.len {
                return Err(bad("extents overlap"));
            }
        }
        if out.len() >= MAX_EXTENTS {
            return Err(bad("more than 4 Mi extents"));
        }
        out.push(Extent {
            start,
            len: fe.len,
            kind: fe.kind,
        });
    }
    Ok(out)
}

/// The csum tree item last used, or a range known to have no checksums.
#[derive(Default)]
struct Csums {
    item: Option<(u64, u64, Item)>,
    gap: Option<(u64, u64)>,
}

/// An open file.
pub(crate) struct BtrfsFile<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) size: u64,
    pub(crate) extents: Vec<Extent>,
    pub(crate) verify: bool,
    bounce: Bounce,
    dec: Decoders,
    /// The last decompressed extent: (disk address, its bytes).
    cached: Option<u64>,
    plain: Vec<u8>,
    raw: Vec<u8>,
    scratch: Vec<u8>,
    csums: Csums,
}

impl<'a> BtrfsFile<'a> {
    pub(crate) fn new(inner: &'a Inner, size: u64, extents: Vec<Extent>, verify: bool) -> Self {
        BtrfsFile {
            inner,
            size,
            extents,
            verify: verify && inner.csum_root.is_some(),
            bounce: Bounce::default(),
            dec: Decoders::default(),
            cached: None,
            plain: Vec::new(),
            raw: Vec::new(),
            scratch: Vec::new(),
            csums: Csums::default(),
        }
    }

    fn ss(&self) -> u64 {
        u64::from(self.inner.sb.sectorsize)
    }

    /// The stored checksum of the data sector at `logical`, if any.
    fn csum(&mut self, logical: u64) -> Result<Option<[u8; 32]>, FsError> {
        let cs = self.inner.trees.csum.size() as u64;
        let ss = self.ss();
        if let Some((s, e, it)) = &self.csums.item {
            if (*s..*e).contains(&logical) {
                return Ok(Some(pick(it.data(), (logical - s) / ss, cs)));
            }
        }
        if let Some((s, e)) = self.csums.gap {
            if (s..e).contains(&logical) {
                return Ok(None);
            }
        }
        let Some(root) = self.inner.csum_root else {
            return Ok(None);
        };
        let key = Key::new(EXTENT_CSUM_OBJECTID, EXTENT_CSUM, logical);
        let mut cur = self.inner.trees.seek(root, key)?;
        let mut gap_end = u64::MAX;
        for _ in 0..2 {
            let Some(it) = cur.next().transpose()? else {
                break;
            };
            if it.key.objectid != EXTENT_CSUM_OBJECTID || it.key.ty != EXTENT_CSUM {
                if it.key > key {
                    break;
                }
                continue;
            }
            let start = it.key.offset;
            let n = it.data().len() as u64 / cs;
            let end = start.saturating_add(n.saturating_mul(ss));
            if start <= logical && logical < end {
                let c = pick(it.data(), (logical - start) / ss, cs);
                self.csums.item = Some((start, end, it));
                return Ok(Some(c));
            }
            if start > logical {
                gap_end = start;
                break;
            }
        }
        self.csums.gap = Some((logical - logical % ss, gap_end));
        Ok(None)
    }

    /// Reads sector-aligned `buf` at sector-aligned `logical`, checking
    /// each sector and repairing the bad ones from the other copies.
    fn read_sectors(&mut self, logical: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let vol = &self.inner.trees.vol;
        let first = vol.read(logical, buf, 0, &mut self.bounce);
        if !self.verify {
            if first.is_ok() {
                return first;
            }
            for attempt in 1..vol.attempts(logical) {
                if vol.read(logical, buf, attempt, &mut self.bounce).is_ok() {
                    return Ok(());
                }
            }
            return first;
        }
        let ss = self.ss();
        let ssz = ss as usize;
        let csum_type = self.inner.trees.csum;
        let mut first_err = first.err();
        for (i, sector) in buf.chunks_mut(ssz).enumerate() {
            let at = logical + i as u64 * ss;
            let want = self.csum(at)?;
            let ok = |b: &[u8]| want.is_none_or(|w| csum_type.matches(b, &w));
            if first_err.is_none() && ok(sector) {
                continue;
            }
            let start = usize::from(first_err.is_none());
            let mut fixed = false;
            for attempt in start..vol.attempts(at) {
                if vol.read(at, sector, attempt, &mut self.bounce).is_ok() && ok(sector) {
                    fixed = true;
                    break;
                }
            }
            if !fixed {
                return Err(match first_err.take() {
                    Some(e) if want.is_none() => e,
                    _ => logical_err(
                        at,
                        format!("data {} checksum mismatch on every copy", csum_type.name()),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Reads `out` from logical `logical` (any alignment).
    fn read_disk(&mut self, logical: u64, out: &mut [u8]) -> Result<(), FsError> {
        let ss = self.ss();
        let end = logical + out.len() as u64;
        let mut pos = logical;
        while pos < end {
            let sec = pos - pos % ss;
            if !self.verify {
                let vol = &self.inner.trees.vol;
                let dst = &mut out[(pos - logical) as usize..];
                let r = vol.read(pos, dst, 0, &mut self.bounce);
                if r.is_err() {
                    let mut fixed = false;
                    for attempt in 1..vol.attempts(pos) {
                        if vol.read(pos, dst, attempt, &mut self.bounce).is_ok() {
                            fixed = true;
                            break;
                        }
                    }
                    if !fixed {
                        return r;
                    }
                }
                return Ok(());
            }
            if pos != sec || end - pos < ss {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.resize(ss as usize, 0);
                let r = self.read_sectors(sec, &mut scratch);
                let stop = end.min(sec + ss);
                if r.is_ok() {
                    out[(pos - logical) as usize..(stop - logical) as usize]
                        .copy_from_slice(&scratch[(pos - sec) as usize..(stop - sec) as usize]);
                }
                self.scratch = scratch;
                r?;
                pos = stop;
            } else {
                let full = end - (end - pos) % ss;
                let dst = &mut out[(pos - logical) as usize..(full - logical) as usize];
                self.read_sectors(pos, dst)?;
                pos = full;
            }
        }
        Ok(())
    }

    /// Makes `self.plain` the decompressed bytes of the extent at
    /// `disk_bytenr`.
    fn load_compressed(
        &mut self,
        compression: u8,
        disk_bytenr: u64,
        disk_num_bytes: u64,
        ram_bytes: u64,
    ) -> Result<(), FsError> {
        if self.cached == Some(disk_bytenr) && self.plain.len() as u64 == ram_bytes {
            return Ok(());
        }
        self.cached = None;
        // OK: both at most 128 KiB, checked when the extents were mapped.
        let mut raw = std::mem::take(&mut self.raw);
        raw.resize(disk_num_bytes as usize, 0);
        let r = self.read_disk(disk_bytenr, &mut raw);
        let r = r.and_then(|()| {
            self.plain.resize(ram_bytes as usize, 0);
            let ss = self.inner.sb.sectorsize as usize;
            self.dec
                .decompress(compression, &raw, &mut self.plain, ss)
                .map_err(|e| {
                    logical_err(
                        disk_bytenr,
                        format!(
                            "{} extent does not decompress: {e}",
                            compress::name(compression)
                        ),
                    )
                })
        });
        self.raw = raw;
        r?;
        self.cached = Some(disk_bytenr);
        Ok(())
    }

    fn inline(&mut self, i: usize) -> Result<(), FsError> {
        let key = u64::MAX - i as u64;
        if self.cached == Some(key) {
            return Ok(());
        }
        self.cached = None;
        let ExtentKind::Inline {
            compression,
            ram_bytes,
            data,
        } = &self.extents[i].kind
        else {
            return Ok(());
        };
        // OK: at most 128 KiB, checked when mapped.
        self.plain.resize(*ram_bytes as usize, 0);
        if *compression == COMPRESS_NONE {
            let n = self.plain.len();
            self.plain.copy_from_slice(&data[..n]);
        } else {
            let ss = self.inner.sb.sectorsize as usize;
            self.dec
                .decompress(*compression, data, &mut self.plain, ss)
                .map_err(|e| {
                    logical_err(
                        0,
                        format!(
                            "inline {} extent does not decompress: {e}",
                            compress::name(*compression)
                        ),
                    )
                })?;
        }
        self.cached = Some(key);
        Ok(())
    }
}

/// What reading at byte `within` of an extent takes.
enum Step {
    Zeros,
    Inline,
    Plain {
        logical: u64,
    },
    Compressed {
        compression: u8,
        disk_bytenr: u64,
        disk_num_bytes: u64,
        ram_bytes: u64,
        from: u64,
    },
}

fn step(kind: &ExtentKind, within: u64) -> Step {
    match *kind {
        ExtentKind::Hole | ExtentKind::Prealloc => Step::Zeros,
        ExtentKind::Inline { .. } => Step::Inline,
        // OK: disk_bytenr + offset + len does not overflow (checked when mapped).
        ExtentKind::Regular {
            compression: COMPRESS_NONE,
            disk_bytenr,
            offset,
            ..
        } => Step::Plain {
            logical: disk_bytenr + offset + within,
        },
        ExtentKind::Regular {
            compression,
            disk_bytenr,
            disk_num_bytes,
            ram_bytes,
            offset,
        } => Step::Compressed {
            compression,
            disk_bytenr,
            disk_num_bytes,
            ram_bytes,
            from: offset + within,
        },
    }
}

fn pick(data: &[u8], idx: u64, cs: u64) -> [u8; 32] {
    let mut c = [0u8; 32];
    let o = usize::try_from(idx.saturating_mul(cs)).unwrap_or(usize::MAX);
    if let Some(s) = crate::bytes::slice(data, o, cs as usize) {
        c[..s.len()].copy_from_slice(s);
    }
    c
}

impl FileHandle for BtrfsFile<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn data_ranges(&mut self) -> Result<Option<Vec<(u64, u64)>>, FsError> {
        // Holes, preallocated extents and ranges no extent covers
        // (`no-holes`) read as zeros.
        let runs = self
            .extents
            .iter()
            .filter(|e| !matches!(e.kind, ExtentKind::Hole | ExtentKind::Prealloc))
            .map(|e| (e.start, e.len));
        Ok(Some(flr_fs::clip_ranges(runs, self.size)))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(self.size - offset).map_or(buf.len(), |r| r.min(buf.len()));
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let want = (n - done) as u64;
            let i = self.extents.partition_point(|e| e.start + e.len <= pos);
            let hit = self
                .extents
                .get(i)
                .filter(|e| e.start <= pos)
                .map(|e| (e.start, e.len));
            let Some((start, len)) = hit else {
                let next = self.extents.get(i).map_or(u64::MAX, |e| e.start);
                let take = want.min(next - pos) as usize;
                buf[done..done + take].fill(0);
                done += take;
                continue;
            };
            let take = want.min(start + len - pos) as usize;
            let within = pos - start;
            let out = &mut buf[done..done + take];
            match step(&self.extents[i].kind, within) {
                Step::Zeros => out.fill(0),
                Step::Inline => {
                    self.inline(i)?;
                    let from = within as usize;
                    let have = self.plain.len().saturating_sub(from).min(take);
                    out[..have].copy_from_slice(&self.plain[from..from + have]);
                    out[have..].fill(0);
                }
                Step::Plain { logical } => self.read_disk(logical, out)?,
                Step::Compressed {
                    compression,
                    disk_bytenr,
                    disk_num_bytes,
                    ram_bytes,
                    from,
                } => {
                    self.load_compressed(compression, disk_bytenr, disk_num_bytes, ram_bytes)?;
                    // OK: offset + len <= ram_bytes was checked when mapped.
                    let from = from as usize;
                    out.copy_from_slice(&self.plain[from..from + take]);
                }
            }
            done += take;
        }
        Ok(n)
    }
}
