//! Two images opened as a pair, the newer one compared against the older:
//! the ranges in which they may differ are found from the best source
//! available and put at the bottom of both stacks as a [`Compared`]
//! source, so that every volume of either image answers
//! [`ReadAt::changed`](flr_io::ReadAt::changed) in its own offsets.
//!
//! The sources of changed ranges, best first:
//!
//! 1. **Known ranges** handed in by the caller ([`KnownChanges`]): the page
//!    ranges that differ between two snapshots of one blob, which the
//!    Blob service lists. They are offsets in the files (a VHD's file), so
//!    the [`Compared`] goes below the container, and the container maps
//!    them through its block map.
//! 2. **A differencing chain**: when NEW is a differencing VHD/VHDX whose
//!    chain of parents reaches OLD (unique id for VHD, `DataWriteGuid` for
//!    VHDX), the sectors NEW and the disks between hold are what changed;
//!    virtual-disk offsets, so the [`Compared`] goes above the container.
//! 3. **A block comparison**: both virtual disks are read once, in large
//!    blocks, by several threads, and compared; a block both report as
//!    known zero is not read. Changed blocks are narrowed to 4 KiB.
//!
//! Either way both images are then scanned as usual; the old one answers
//! from the same ranges (a range that differs differs on both sides).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flr_io::{
    Compared, FileParentResolver, FileSource, IoError, ParentResolver, RangeSet, ReadAt, Source,
};
use flr_layer::ContainerInfo;
use serde::Serialize;

use crate::{EngineError, Image, KeyRing, Scan};

/// How the changed ranges were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The page ranges the Blob service lists as different between two
    /// snapshots of one blob (or of one managed disk).
    BlobDiff,
    /// The sectors a differencing VHD/VHDX (and the disks between it and
    /// the old image) holds.
    Differencing,
    /// Both images read and compared block by block.
    BlockCompare,
}

impl Method {
    /// The name, as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::BlobDiff => "blob-diff",
            Method::Differencing => "differencing",
            Method::BlockCompare => "block-compare",
        }
    }
}

/// Where in the stacks the [`Compared`] source was put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Below the container: the ranges are offsets in the image files.
    File,
    /// Above the container: the ranges are virtual-disk offsets.
    VirtualDisk,
}

/// What finding the changed ranges took and gave.
#[derive(Debug, Clone, Serialize)]
pub struct CompareFacts {
    /// How they were found.
    pub method: Method,
    /// At which level they are offsets.
    pub level: Level,
    /// Bytes in the changed ranges.
    pub changed_bytes: u64,
    /// Number of disjoint changed ranges.
    pub ranges: usize,
    /// Bytes read to find them (both images, for a block comparison; the
    /// service's answers, for a blob diff).
    pub bytes_read: u64,
    /// Reads or requests made to find them.
    pub requests: u64,
    /// Seconds spent finding them.
    pub seconds: f64,
    /// Why a better method was not used, when one was not
    /// (`"the new image is not a differencing disk"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Changed ranges the caller already knows, as offsets in the image files
/// (the blob diff of two snapshots).
#[derive(Debug, Clone)]
pub struct KnownChanges {
    /// The ranges.
    pub ranges: RangeSet,
    /// Bytes fetched to learn them.
    pub bytes_read: u64,
    /// Requests made to learn them.
    pub requests: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// One side of a pair: its bytes, where they came from (as printed), and
/// where a differencing disk's parents are looked for.
pub struct Side<'a> {
    /// The image file's (or blob's) bytes.
    pub source: Source,
    /// Shown location.
    pub location: String,
    /// Resolves a differencing disk's parents.
    pub parents: &'a dyn ParentResolver,
}

/// Tuning of [`open_pair`].
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// How much of each image is scanned.
    pub scan: Scan,
    /// Block size of a block comparison (bytes; a multiple of 4096).
    pub block_size: u64,
    /// Threads reading for a block comparison (at least 2).
    pub threads: usize,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            scan: Scan::Quick,
            block_size: 1 << 20,
            threads: 4,
        }
    }
}

/// Two images opened together, each of whose volumes answers
/// [`ReadAt::changed`](flr_io::ReadAt::changed) against the other.
pub struct Pair {
    /// The older image (the base).
    pub old: Arc<Image>,
    /// The newer image.
    pub new: Image,
    /// What finding the changed ranges took.
    pub facts: CompareFacts,
    /// The changed ranges, at [`CompareFacts::level`].
    pub changes: RangeSet,
}

/// Opens local image files OLD and NEW as a pair (differencing chain, else
/// block comparison).
pub fn open_pair_paths(
    old: &Path,
    new: &Path,
    opts: &CompareOptions,
    keys: &KeyRing,
) -> Result<Pair, EngineError> {
    let old_src: Source = Arc::new(FileSource::open(old)?);
    let new_src: Source = Arc::new(FileSource::open(new)?);
    let old_parents = FileParentResolver::new(old);
    let new_parents = FileParentResolver::new(new);
    open_pair(
        Side {
            source: old_src,
            location: old.display().to_string(),
            parents: &old_parents,
        },
        Side {
            source: new_src,
            location: new.display().to_string(),
            parents: &new_parents,
        },
        None,
        opts,
        keys,
    )
}

/// Opens OLD and NEW as a pair. With `known` (offsets in the files), those
/// ranges are used as they are; otherwise a differencing chain from NEW to
/// OLD gives them, else a block comparison of the virtual disks.
pub fn open_pair(
    old: Side<'_>,
    new: Side<'_>,
    known: Option<KnownChanges>,
    opts: &CompareOptions,
    keys: &KeyRing,
) -> Result<Pair, EngineError> {
    if let Some(k) = known {
        let facts = CompareFacts {
            method: Method::BlobDiff,
            level: Level::File,
            changed_bytes: k.ranges.bytes(),
            ranges: k.ranges.count(),
            bytes_read: k.bytes_read,
            requests: k.requests,
            seconds: k.seconds,
            note: None,
        };
        let wrap = |s: Side<'_>| -> Result<Image, EngineError> {
            let c: Source = Arc::new(Compared::new(s.source, k.ranges.clone()));
            crate::open_source(c, &s.location, s.parents, opts.scan, keys)
        };
        // Both opened at once: over a network each probe (partition
        // tables, superblocks, group descriptors) is a round trip, and the
        // two images' probes need not wait for each other.
        let (old_img, new_img) = std::thread::scope(|sc| {
            let o = sc.spawn(|| wrap(old));
            let n = wrap(new);
            (o.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), n)
        });
        let (old_img, new_img) = (old_img?, new_img?);
        return Ok(Pair::new(old_img, new_img, facts, k.ranges));
    }
    let started = Instant::now();
    let o = Container::open(old.source.clone(), old.parents)?;
    let n = Container::open(new.source.clone(), new.parents)?;
    let (changes, facts) = match differencing(&o, &n)? {
        Ok(ranges) => {
            let facts = CompareFacts {
                method: Method::Differencing,
                level: Level::VirtualDisk,
                changed_bytes: ranges.bytes(),
                ranges: ranges.count(),
                bytes_read: 0,
                requests: 0,
                seconds: started.elapsed().as_secs_f64(),
                note: None,
            };
            (ranges, facts)
        }
        Err(why) => {
            let (ranges, stats) =
                compare_blocks(&o.disk(), &n.disk(), opts.block_size, opts.threads)?;
            let facts = CompareFacts {
                method: Method::BlockCompare,
                level: Level::VirtualDisk,
                changed_bytes: ranges.bytes(),
                ranges: ranges.count(),
                bytes_read: stats.bytes_read,
                requests: stats.reads,
                seconds: started.elapsed().as_secs_f64(),
                note: Some(why),
            };
            (ranges, facts)
        }
    };
    let old_img = o.scan(
        old.source.len(),
        &old.location,
        old.parents,
        &changes,
        opts,
        keys,
    )?;
    let new_img = n.scan(
        new.source.len(),
        &new.location,
        new.parents,
        &changes,
        opts,
        keys,
    )?;
    Ok(Pair::new(old_img, new_img, facts, changes))
}

impl Pair {
    fn new(old: Image, mut new: Image, facts: CompareFacts, changes: RangeSet) -> Pair {
        let old = Arc::new(old);
        new.set_base(old.clone());
        Pair {
            old,
            new,
            facts,
            changes,
        }
    }
}

/// An image's container, opened ahead of the scan so that the changed
/// ranges can be put on its virtual disk.
enum Container {
    Vhd(Arc<flr_vhd::VhdDisk>),
    Vhdx(Arc<flr_vhdx::VhdxDisk>),
    Raw(Source),
}

impl Container {
    fn open(src: Source, parents: &dyn ParentResolver) -> Result<Container, EngineError> {
        let layer = |format, e: Box<dyn std::error::Error + Send + Sync>| EngineError::Layer {
            format,
            error: flr_layer::LayerError::broken(e),
        };
        if flr_vhdx::probe(src.as_ref()) {
            let d = flr_vhdx::VhdxDisk::open(src, parents).map_err(|e| layer("vhdx", e.into()))?;
            return Ok(Container::Vhdx(Arc::new(d)));
        }
        if flr_vhd::probe(src.as_ref()) {
            let d = flr_vhd::VhdDisk::open(src, parents).map_err(|e| layer("vhd", e.into()))?;
            return Ok(Container::Vhd(Arc::new(d)));
        }
        Ok(Container::Raw(src))
    }

    fn disk(&self) -> Source {
        match self {
            Container::Vhd(d) => d.clone(),
            Container::Vhdx(d) => d.clone(),
            Container::Raw(s) => s.clone(),
        }
    }

    fn info(&self, file_size: u64) -> Option<(ContainerInfo, &'static str)> {
        match self {
            Container::Vhd(d) => Some((flr_vhd::container_info(d, file_size), "vhd")),
            Container::Vhdx(d) => Some((flr_vhdx::container_info(d, file_size), "vhdx")),
            Container::Raw(_) => None,
        }
    }

    /// Scans the virtual disk, wrapped in the changed ranges, and reports
    /// the container as a scan of the file would.
    fn scan(
        &self,
        file_size: u64,
        location: &str,
        parents: &dyn ParentResolver,
        changes: &RangeSet,
        opts: &CompareOptions,
        keys: &KeyRing,
    ) -> Result<Image, EngineError> {
        let disk: Source = Arc::new(Compared::new(self.disk(), changes.clone()));
        let mut img = crate::open_source(disk, location, parents, opts.scan, keys)?;
        if let Some((info, name)) = self.info(file_size) {
            img.container = info;
            for v in img
                .volumes
                .iter_mut()
                .filter(|v| v.parent.is_none() && v.id.ends_with("disk"))
            {
                v.content.layers.insert(0, name);
            }
        }
        Ok(img)
    }
}

/// The ranges NEW's differencing chain holds down to OLD, or why there is
/// no such chain.
fn differencing(old: &Container, new: &Container) -> Result<Result<RangeSet, String>, EngineError> {
    match (old, new) {
        (Container::Vhd(o), Container::Vhd(n)) => {
            let target = &o.info().unique_id;
            let mut held = RangeSet::new();
            let mut cur: &flr_vhd::VhdDisk = n;
            loop {
                let Some(p) = cur.parent() else {
                    return Ok(Err(
                        if cur.info().parent_unique_id.is_none() && held.is_empty() {
                            "the new image is not a differencing disk".into()
                        } else {
                            "the old image is not in the new image's chain of parents".into()
                        },
                    ));
                };
                if cur.info().parent_unique_id.as_deref() != Some(p.info().unique_id.as_str()) {
                    return Ok(Err(format!(
                        "a parent in the chain has unique id {}, not the one its child expects",
                        p.info().unique_id
                    )));
                }
                for (off, len) in cur.held_ranges()?.extents() {
                    held.insert(off, len);
                }
                if &p.info().unique_id == target && p.len() == o.len() {
                    return Ok(Ok(held));
                }
                cur = p;
            }
        }
        (Container::Vhdx(o), Container::Vhdx(n)) => {
            let target = &o.info().data_write_guid;
            let mut held = RangeSet::new();
            let mut cur: &flr_vhdx::VhdxDisk = n;
            loop {
                let Some(p) = cur.parent() else {
                    return Ok(Err(if !cur.info().has_parent {
                        "the new image is not a differencing disk".into()
                    } else {
                        "the old image is not in the new image's chain of parents".into()
                    }));
                };
                let linked = cur
                    .info()
                    .parent_locator
                    .iter()
                    .filter(|(k, _)| k == "parent_linkage" || k == "parent_linkage2")
                    .any(|(_, v)| guid(v) == guid(&p.info().data_write_guid));
                if !linked {
                    return Ok(Err(
                        "a parent in the chain was written after its child was made (DataWriteGuid differs from the linkage)".into(),
                    ));
                }
                for (off, len) in cur.held_ranges()?.extents() {
                    held.insert(off, len);
                }
                if guid(&p.info().data_write_guid) == guid(target) && p.len() == o.len() {
                    return Ok(Ok(held));
                }
                cur = p;
            }
        }
        _ => Ok(Err(
            "the new image is not a differencing disk of the old one".into(),
        )),
    }
}

/// A GUID's text as one key: no braces, lower case.
fn guid(s: &str) -> String {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

/// What a block comparison read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Bytes read from both sources.
    pub bytes_read: u64,
    /// Reads made.
    pub reads: u64,
    /// Blocks skipped because both sides are known zero.
    pub skipped_zero: u64,
}

/// Granularity to which a changed block is narrowed.
const FINE: usize = 4096;

/// Compares `old` and `new` in blocks of `block` bytes read by `threads`
/// threads (at least 2), each source read once; blocks both report as
/// known zero are skipped. Changed blocks are narrowed to 4 KiB pieces.
/// Bytes past the shorter source are changed.
pub fn compare_blocks(
    old: &Source,
    new: &Source,
    block: u64,
    threads: usize,
) -> Result<(RangeSet, BlockStats), IoError> {
    let block = block.max(FINE as u64).div_ceil(FINE as u64) * FINE as u64;
    let common = old.len().min(new.len());
    let blocks = common.div_ceil(block);
    let next = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let skipped = AtomicUsize::new(0);
    let found: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<IoError>> = Mutex::new(None);
    let threads = threads.max(2);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut a = vec![0u8; block as usize];
                let mut b = vec![0u8; block as usize];
                let mut mine = Vec::new();
                loop {
                    if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= blocks {
                        break;
                    }
                    let off = k * block;
                    let len = block.min(common - off);
                    if old.is_known_zero(off, len) && new.is_known_zero(off, len) {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let n = len as usize;
                    let r = old
                        .read_exact_at(off, &mut a[..n])
                        .and_then(|()| new.read_exact_at(off, &mut b[..n]));
                    if let Err(e) = r {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        break;
                    }
                    bytes.fetch_add(2 * len, Ordering::Relaxed);
                    reads.fetch_add(2, Ordering::Relaxed);
                    if a[..n] == b[..n] {
                        continue;
                    }
                    for (i, (x, y)) in a[..n].chunks(FINE).zip(b[..n].chunks(FINE)).enumerate() {
                        if x != y {
                            mine.push((off + (i * FINE) as u64, x.len() as u64));
                        }
                    }
                }
                found.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut ranges = RangeSet::from_extents(found.into_inner().unwrap_or_else(|p| p.into_inner()));
    let longer = old.len().max(new.len());
    if longer > common {
        ranges.insert(common, longer - common);
    }
    Ok((
        ranges,
        BlockStats {
            bytes_read: bytes.into_inner(),
            reads: reads.into_inner(),
            skipped_zero: skipped.into_inner() as u64,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flr_io::MemSource;

    fn mem(v: Vec<u8>) -> Source {
        Arc::new(MemSource::new(v))
    }

    #[test]
    fn block_compare_finds_exactly_the_changed_pieces() {
        let size = 5 * (1 << 20) + 12345;
        let a: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = a.clone();
        // One byte, a run across a block boundary, the last partial piece.
        b[10] ^= 1;
        for x in &mut b[(1 << 20) - 5000..(1 << 20) + 3] {
            *x ^= 0xFF;
        }
        b[size - 1] ^= 1;
        let (r, st) = compare_blocks(&mem(a.clone()), &mem(b), 1 << 20, 3).unwrap();
        let want: Vec<(u64, u64)> = vec![
            (0, 4096),
            ((1 << 20) - 8192, 8192 + 4096),
            ((size as u64 / 4096) * 4096, size as u64 % 4096),
        ];
        assert_eq!(r.extents().collect::<Vec<_>>(), want);
        assert_eq!(st.bytes_read, 2 * size as u64);
        // A longer new image: its tail is changed.
        let mut c = a.clone();
        c.extend_from_slice(&[1, 2, 3]);
        let (r, _) = compare_blocks(&mem(a), &mem(c), 1 << 20, 2).unwrap();
        assert_eq!(r.extents().collect::<Vec<_>>(), vec![(size as u64, 3)]);
    }

    #[test]
    fn block_compare_skips_known_zero_blocks() {
        let z: Source = Arc::new(flr_io::Zeros::new(8 << 20));
        let (r, st) = compare_blocks(&z, &z.clone(), 1 << 20, 2).unwrap();
        assert!(r.is_empty());
        assert_eq!((st.bytes_read, st.skipped_zero), (0, 8));
        assert_eq!(z.len(), 8 << 20);
    }
}
